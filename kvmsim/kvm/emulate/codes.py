"""Model of arch/x86/kvm/kvm_emulate.h and kvm_host.h constants: result codes, EMULTYPE_*, modes.

Values are the kernel's, so traces and tests can print and compare them as-is.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# --- X86EMUL_* : what one emulator step returns (kvm_emulate.h) --------------------------
X86EMUL_CONTINUE = 0
X86EMUL_UNHANDLEABLE = 1
X86EMUL_PROPAGATE_FAULT = 2  # an exception is in ctxt.exception
X86EMUL_RETRY_INSTR = 3
X86EMUL_CMPXCHG_FAILED = 4
X86EMUL_IO_NEEDED = 5  # userspace PIO/MMIO/MSR is needed
X86EMUL_INTERCEPTED = 6  # a nested intercept fired


class X86Emul(IntEnum):
    """The X86EMUL_* codes as an enum, for printing."""

    CONTINUE = X86EMUL_CONTINUE
    UNHANDLEABLE = X86EMUL_UNHANDLEABLE
    PROPAGATE_FAULT = X86EMUL_PROPAGATE_FAULT
    RETRY_INSTR = X86EMUL_RETRY_INSTR
    CMPXCHG_FAILED = X86EMUL_CMPXCHG_FAILED
    IO_NEEDED = X86EMUL_IO_NEEDED
    INTERCEPTED = X86EMUL_INTERCEPTED


# --- EMULATION_* : what x86_decode_insn / x86_emulate_insn return ----------------------
EMULATION_FAILED = -1
EMULATION_OK = 0
EMULATION_RESTART = 1  # unfinished REP string: x86.c loops back to `restart`
EMULATION_INTERCEPTED = 2


class Emulation(IntEnum):
    """The EMULATION_* results as an enum, for printing."""

    FAILED = EMULATION_FAILED
    OK = EMULATION_OK
    RESTART = EMULATION_RESTART
    INTERCEPTED = EMULATION_INTERCEPTED


class EmulType(IntFlag):
    """EMULTYPE_* (arch/x86/include/asm/kvm_host.h): why the emulator was entered."""

    NO_DECODE = 1 << 0
    TRAP_UD = 1 << 1
    SKIP = 1 << 2
    ALLOW_RETRY_PF = 1 << 3
    TRAP_UD_FORCED = 1 << 4
    VMWARE_GP = 1 << 5
    PF = 1 << 6
    COMPLETE_USER_EXIT = 1 << 7
    WRITE_PF_TO_SP = 1 << 8


EMULTYPE_NO_DECODE = EmulType.NO_DECODE
EMULTYPE_TRAP_UD = EmulType.TRAP_UD
EMULTYPE_SKIP = EmulType.SKIP
EMULTYPE_ALLOW_RETRY_PF = EmulType.ALLOW_RETRY_PF
EMULTYPE_TRAP_UD_FORCED = EmulType.TRAP_UD_FORCED
EMULTYPE_VMWARE_GP = EmulType.VMWARE_GP
EMULTYPE_PF = EmulType.PF
EMULTYPE_COMPLETE_USER_EXIT = EmulType.COMPLETE_USER_EXIT
EMULTYPE_WRITE_PF_TO_SP = EmulType.WRITE_PF_TO_SP


class X86EmulMode(IntEnum):
    """enum x86emul_mode; ordered as the kernel orders it (mode < PROT16 means real/vm86)."""

    X86EMUL_MODE_REAL = 0
    X86EMUL_MODE_VM86 = 1
    X86EMUL_MODE_PROT16 = 2
    X86EMUL_MODE_PROT32 = 3
    X86EMUL_MODE_PROT64 = 4


X86EMUL_MODE_REAL = X86EmulMode.X86EMUL_MODE_REAL
X86EMUL_MODE_VM86 = X86EmulMode.X86EMUL_MODE_VM86
X86EMUL_MODE_PROT16 = X86EmulMode.X86EMUL_MODE_PROT16
X86EMUL_MODE_PROT32 = X86EmulMode.X86EMUL_MODE_PROT32
X86EMUL_MODE_PROT64 = X86EmulMode.X86EMUL_MODE_PROT64


class OperandType(IntEnum):
    """struct operand's type (kvm_emulate.h)."""

    OP_REG = 0
    OP_MEM = 1
    OP_MEM_STR = 2
    OP_IMM = 3
    OP_XMM = 4
    OP_MM = 5
    OP_NONE = 6


OP_REG, OP_MEM, OP_MEM_STR, OP_IMM, OP_XMM, OP_MM, OP_NONE = (int(t) for t in OperandType)

# --- registers (kvm_cache_regs.h VCPU_REGS_*, VCPU_SREG_*) ------------------------------
VCPU_REGS_RAX, VCPU_REGS_RCX, VCPU_REGS_RDX, VCPU_REGS_RBX = 0, 1, 2, 3
VCPU_REGS_RSP, VCPU_REGS_RBP, VCPU_REGS_RSI, VCPU_REGS_RDI = 4, 5, 6, 7
VCPU_REGS_R8, VCPU_REGS_R11 = 8, 11
NR_EMULATOR_GPRS = 16
GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

VCPU_SREG_ES, VCPU_SREG_CS, VCPU_SREG_SS, VCPU_SREG_DS = 0, 1, 2, 3
VCPU_SREG_FS, VCPU_SREG_GS, VCPU_SREG_TR, VCPU_SREG_LDTR = 4, 5, 6, 7
SREG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs", "tr", "ldtr")

# --- exception vectors -----------------------------------------------------------------
DE_VECTOR, DB_VECTOR, BP_VECTOR, OF_VECTOR = 0, 1, 3, 4
UD_VECTOR, NM_VECTOR, DF_VECTOR, TS_VECTOR = 6, 7, 8, 10
NP_VECTOR, SS_VECTOR, GP_VECTOR, PF_VECTOR, MF_VECTOR = 11, 12, 13, 14, 16
PFERR_WRITE_MASK = 1 << 1

# --- RFLAGS bits (asm/processor-flags.h) -----------------------------------------------
X86_EFLAGS_CF = 1 << 0
X86_EFLAGS_FIXED = 1 << 1
X86_EFLAGS_PF = 1 << 2
X86_EFLAGS_AF = 1 << 4
X86_EFLAGS_ZF = 1 << 6
X86_EFLAGS_SF = 1 << 7
X86_EFLAGS_TF = 1 << 8
X86_EFLAGS_IF = 1 << 9
X86_EFLAGS_DF = 1 << 10
X86_EFLAGS_OF = 1 << 11
X86_EFLAGS_IOPL_BIT = 12
X86_EFLAGS_IOPL = 3 << 12
X86_EFLAGS_NT = 1 << 14
X86_EFLAGS_RF = 1 << 16
X86_EFLAGS_VM = 1 << 17
X86_EFLAGS_AC = 1 << 18
X86_EFLAGS_VIF = 1 << 19
X86_EFLAGS_VIP = 1 << 20
X86_EFLAGS_ID = 1 << 21
# The arithmetic flags the fastop stubs take in and give back (emulate.c EFLAGS_MASK).
EFLAGS_MASK = (X86_EFLAGS_OF | X86_EFLAGS_SF | X86_EFLAGS_ZF | X86_EFLAGS_AF
               | X86_EFLAGS_PF | X86_EFLAGS_CF)
EFLG_RESERVED_ZEROS_MASK = 0xFFC0802A

# --- control registers, MSRs -----------------------------------------------------------
X86_CR0_PE, X86_CR0_MP, X86_CR0_EM, X86_CR0_TS = 1 << 0, 1 << 1, 1 << 2, 1 << 3
X86_CR4_TSD, X86_CR4_DE, X86_CR4_PCE = 1 << 2, 1 << 3, 1 << 8
X86_CR4_OSFXSR, X86_CR4_UMIP, X86_CR4_LA57 = 1 << 9, 1 << 11, 1 << 12
X86_CR4_OSXSAVE, X86_CR4_CET = 1 << 18, 1 << 23

MSR_EFER = 0xC0000080
MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK = 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084
MSR_TSC_AUX = 0xC0000103
MSR_IA32_TSC = 0x10
MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_MISC_FEATURES_ENABLES = 0x140
MSR_MISC_FEATURES_ENABLES_CPUID_FAULT = 1 << 0
MSR_IA32_U_CET, MSR_IA32_S_CET = 0x6A0, 0x6A2
CET_SHSTK_EN, CET_ENDBR_EN = 1 << 0, 1 << 2
EFER_SCE, EFER_LME, EFER_LMA, EFER_SVME = 1 << 0, 1 << 8, 1 << 10, 1 << 12

DR6_BD, DR6_ACTIVE_LOW, DR_TRAP_BITS, DR7_GD = 1 << 13, 0xFFFF0FF0, 0xF, 1 << 13

KVM_X86_SHADOW_INT_MOV_SS = 1
KVM_X86_SHADOW_INT_STI = 2

REPE_PREFIX, REPNE_PREFIX = 0xF3, 0xF2

# X86EMUL_F_* access flags passed to linearize / get_untagged_addr / is_canonical_addr.
X86EMUL_F_WRITE = 1 << 0
X86EMUL_F_FETCH = 1 << 1
X86EMUL_F_IMPLICIT = 1 << 2
X86EMUL_F_INVLPG = 1 << 3
X86EMUL_F_MSR = 1 << 4
X86EMUL_F_DT_LOAD = 1 << 5

PAGE_SIZE = 4096
