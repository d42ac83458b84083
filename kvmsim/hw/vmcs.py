"""Model of the VMCS exit-information fields and arch/x86/include/uapi/asm/vmx.h exit reasons.

Layouts are named records (exit qualification, interruption info) so each bit is
documented once; `hw/` fills them on a VM exit, `kvm/vmx.py` decodes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple


class ExitReason(IntEnum):
    """EXIT_REASON_* basic exit reasons (uapi vmx.h); the kvm_exit tracepoint prints the name."""

    EXCEPTION_NMI = 0
    EXTERNAL_INTERRUPT = 1
    TRIPLE_FAULT = 2
    INIT_SIGNAL = 3
    SIPI_SIGNAL = 4
    OTHER_SMI = 6
    INTERRUPT_WINDOW = 7
    NMI_WINDOW = 8
    TASK_SWITCH = 9
    CPUID = 10
    HLT = 12
    INVD = 13
    INVLPG = 14
    RDPMC = 15
    RDTSC = 16
    VMCALL = 18
    VMCLEAR = 19
    VMLAUNCH = 20
    VMPTRLD = 21
    VMPTRST = 22
    VMREAD = 23
    VMRESUME = 24
    VMWRITE = 25
    VMOFF = 26
    VMON = 27
    CR_ACCESS = 28
    DR_ACCESS = 29
    IO_INSTRUCTION = 30
    MSR_READ = 31
    MSR_WRITE = 32
    INVALID_STATE = 33
    MSR_LOAD_FAIL = 34
    MWAIT_INSTRUCTION = 36
    MONITOR_TRAP_FLAG = 37
    MONITOR_INSTRUCTION = 39
    PAUSE_INSTRUCTION = 40
    MCE_DURING_VMENTRY = 41
    TPR_BELOW_THRESHOLD = 43
    APIC_ACCESS = 44
    EOI_INDUCED = 45
    GDTR_IDTR = 46
    LDTR_TR = 47
    EPT_VIOLATION = 48
    EPT_MISCONFIG = 49
    INVEPT = 50
    RDTSCP = 51
    PREEMPTION_TIMER = 52
    INVVPID = 53
    WBINVD = 54
    XSETBV = 55
    APIC_WRITE = 56
    RDRAND = 57
    INVPCID = 58
    VMFUNC = 59
    ENCLS = 60
    RDSEED = 61
    PML_FULL = 62
    XSAVES = 63
    XRSTORS = 64
    UMWAIT = 67
    TPAUSE = 68
    BUS_LOCK = 74
    NOTIFY = 75
    SEAMCALL = 76
    TDCALL = 77
    MSR_READ_IMM = 84
    MSR_WRITE_IMM = 85


VMX_EXIT_REASON_NAMES: frozenset[str] = frozenset(r.name for r in ExitReason)
VMX_EXIT_REASONS_FAILED_VMENTRY = 0x80000000
VMX_EXIT_REASONS_BUS_LOCK_DETECTED = 1 << 26


_NAMES: dict[int, str] = {}


def exit_reason_name(full: int) -> str:
    """How kvm_exit prints a reason: the basic name plus flag names for the high bits."""
    name = _NAMES.get(full)
    if name is None:
        name = _NAMES[full] = _exit_reason_name(full)
    return name


def _exit_reason_name(full: int) -> str:
    basic = full & 0xFFFF
    try:
        name = ExitReason(basic).name
    except ValueError:
        name = f"0x{basic:x}"
    if full & VMX_EXIT_REASONS_FAILED_VMENTRY:
        name += "|FAILED_VMENTRY"
    return name


# ---------------------------------------------------------------- interruption info (SDM 24.8.3)

INTR_INFO_VECTOR_MASK = 0xFF
INTR_INFO_INTR_TYPE_MASK = 0x700
INTR_INFO_DELIVER_CODE_MASK = 0x800
INTR_INFO_UNBLOCK_NMI = 0x1000
INTR_INFO_VALID_MASK = 0x80000000


class IntrType(IntEnum):
    """INTR_TYPE_* (already shifted into bits 10:8)."""

    EXT_INTR = 0x000
    RESERVED = 0x100
    NMI_INTR = 0x200
    HARD_EXCEPTION = 0x300
    SOFT_INTR = 0x400
    PRIV_SW_EXCEPTION = 0x500
    SOFT_EXCEPTION = 0x600
    OTHER_EVENT = 0x700


class Vector(IntEnum):
    """Exception vectors."""

    DE = 0
    DB = 1
    NMI = 2
    BP = 3
    OF = 4
    BR = 5
    UD = 6
    NM = 7
    DF = 8
    TS = 10
    NP = 11
    SS = 12
    GP = 13
    PF = 14
    MF = 16
    AC = 17
    MC = 18
    XM = 19


EXCEPTIONS_WITH_ERROR_CODE = frozenset({Vector.DF, Vector.TS, Vector.NP, Vector.SS, Vector.GP,
                                        Vector.PF, Vector.AC})


def intr_info(vector: int, itype: IntrType, has_error: bool = False) -> int:
    return INTR_INFO_VALID_MASK | int(itype) | (INTR_INFO_DELIVER_CODE_MASK if has_error else 0) | vector


# ---------------------------------------------------------------- exit qualifications

# I/O exit qualification bits (SDM table 28-5), read directly by handle_io as the kernel does.
IO_QUAL_SIZE_MASK, IO_QUAL_IN, IO_QUAL_STRING, IO_QUAL_PORT_SHIFT = 7, 1 << 3, 1 << 4, 16


class IoExitQual(NamedTuple):
    """Exit qualification for I/O instructions (SDM table 28-5); a tuple because it is built per exit."""

    size: int       # bits 2:0 hold size - 1
    is_in: bool     # bit 3
    string: bool    # bit 4
    rep: bool       # bit 5
    imm: bool       # bit 6: operand encoding, 1 = immediate port
    port: int       # bits 31:16

    def encode(self) -> int:
        return ((self.size - 1) | (self.is_in << 3) | (self.string << 4) | (self.rep << 5)
                | (self.imm << 6) | (self.port << 16))

    @classmethod
    def decode(cls, q: int) -> "IoExitQual":
        return cls((q & 7) + 1, bool(q & 8), bool(q & 16), bool(q & 32), bool(q & 64), q >> 16)


# EPT violation exit qualification bits (SDM table 28-7).
EPT_VIOLATION_ACC_READ = 1 << 0
EPT_VIOLATION_ACC_WRITE = 1 << 1
EPT_VIOLATION_ACC_INSTR = 1 << 2
EPT_VIOLATION_RWX_MASK = 7 << 3     # permissions of the EPT entry (0: not present)
EPT_VIOLATION_READABLE, EPT_VIOLATION_WRITABLE, EPT_VIOLATION_EXECUTABLE = 1 << 3, 1 << 4, 1 << 5
EPT_VIOLATION_GVA_IS_VALID = 1 << 7
EPT_VIOLATION_GVA_TRANSLATED = 1 << 8
EPT_VIOLATION_NMI_UNBLOCKING = 1 << 12

ENTRY_FAIL_DEFAULT = 0


class Vmcs:
    """The VMCS fields this model reads and writes (names after the kernel's field enums)."""

    def __init__(self) -> None:
        self.vm_exit_reason: int = 0
        self.exit_qualification: int = 0
        self.vm_exit_instruction_len: int = 0
        self.vm_exit_intr_info: int = 0
        self.vm_exit_intr_error_code: int = 0
        self.idt_vectoring_info_field: int = 0
        self.idt_vectoring_error_code: int = 0
        self.guest_physical_address: int = 0
        self.guest_linear_address: int = 0
        self.vm_entry_intr_info_field: int = 0
        self.vm_entry_exception_error_code: int = 0
        self.vm_entry_instruction_len: int = 0
        self.guest_interruptibility_info: int = 0
        self.guest_pending_dbg_exceptions: int = 0
        self.guest_dr7: int = 0x400              # DR7 the CPU arms its breakpoints from (KVM's vmx_set_dr7)
        self.vm_instruction_error: int = 0
        self.vmx_instruction_info: int = 0       # VMX_INSTRUCTION_INFO: operands of INVPCID & co. (SDM table 28-13)
        self.guest_pml_index: int = 511          # GUEST_PML_INDEX: the next PML entry the CPU writes (511 down to 0)
        self.notify_window: int = 0              # NOTIFY_WINDOW (with SECONDARY_EXEC_NOTIFY_VM_EXITING)
        # VM-execution control fields the CPU consults when deciding whether an instruction exits
        # (KVM writes them: kvm/vmx_controls.py at vCPU creation, vmx_set_cr0/cr4 and handlers later).
        self.cpu_based_vm_exec_control: int = 0
        self.secondary_vm_exec_control: int = 0
        self.cr0_guest_host_mask: int = 0
        self.cr0_read_shadow: int = 0x60000010   # the reset CR0 (CD|NW|ET) until KVM writes the guest's value
        self.cr4_guest_host_mask: int = 0
        self.cr4_read_shadow: int = 0
        self.ple_gap: int = 0                    # PAUSE-loop exiting: TSC cycles between PAUSEs of one loop
        self.ple_window: int = 0                 # ... and how long such a loop may spin before it exits
        # VMX-preemption timer (PIN_BASED_VMX_PREEMPTION_TIMER while armed).  Simplified: an absolute
        # deadline in the vCPU's retired guest instructions (its virtual clock), not a TSC-scaled count.
        self.vmx_preemption_timer_deadline: int | None = None
        # TSC_OFFSET: RDTSC reads the CPU's TSC plus this.  The silicon's TSC is its retired guest
        # instructions (counted while an instruction budget, timer or interrupt window is set).
        self.tsc_offset: int = 0

    def clear_exit_info(self) -> None:
        self.exit_qualification = self.vm_exit_instruction_len = 0
        self.vm_exit_intr_info = self.vm_exit_intr_error_code = 0
        self.idt_vectoring_info_field = self.idt_vectoring_error_code = 0
        self.guest_physical_address = self.guest_linear_address = 0


NMI_HOST_INTR_INFO = 0x80000202   # valid | NMI type | vector 2: a host NMI while the guest ran
GUEST_INTR_STATE_STI = 1 << 0
GUEST_INTR_STATE_MOV_SS = 1 << 1
GUEST_INTR_STATE_NMI = 1 << 3


# ---------------------------------------------------------------- VM-execution controls (SDM 25.6.2)

# Primary processor-based controls (CPU_BASED_VM_EXEC_CONTROL), arch/x86/include/asm/vmx.h names.
CPU_BASED_INTR_WINDOW_EXITING = 1 << 2
CPU_BASED_USE_TSC_OFFSETTING = 1 << 3
CPU_BASED_HLT_EXITING = 1 << 7
CPU_BASED_INVLPG_EXITING = 1 << 9
CPU_BASED_MWAIT_EXITING = 1 << 10
CPU_BASED_RDPMC_EXITING = 1 << 11
CPU_BASED_RDTSC_EXITING = 1 << 12
CPU_BASED_CR3_LOAD_EXITING = 1 << 15
CPU_BASED_CR3_STORE_EXITING = 1 << 16
CPU_BASED_ACTIVATE_TERTIARY_CONTROLS = 1 << 17
CPU_BASED_CR8_LOAD_EXITING = 1 << 19
CPU_BASED_CR8_STORE_EXITING = 1 << 20
CPU_BASED_TPR_SHADOW = 1 << 21
CPU_BASED_NMI_WINDOW_EXITING = 1 << 22
CPU_BASED_MOV_DR_EXITING = 1 << 23
CPU_BASED_UNCOND_IO_EXITING = 1 << 24
CPU_BASED_USE_IO_BITMAPS = 1 << 25
CPU_BASED_MONITOR_TRAP_FLAG = 1 << 27
CPU_BASED_USE_MSR_BITMAPS = 1 << 28
CPU_BASED_MONITOR_EXITING = 1 << 29
CPU_BASED_PAUSE_EXITING = 1 << 30
CPU_BASED_ACTIVATE_SECONDARY_CONTROLS = 1 << 31

# Secondary processor-based controls (SECONDARY_VM_EXEC_CONTROL).
SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES = 1 << 0
# APIC-access exit qualification (SDM table 28-6): page offset, access type.
APIC_ACCESS_OFFSET, APIC_ACCESS_TYPE = 0xFFF, 0xF000
TYPE_LINEAR_APIC_INST_READ, TYPE_LINEAR_APIC_INST_WRITE, TYPE_LINEAR_APIC_INST_FETCH = 0 << 12, 1 << 12, 2 << 12
SECONDARY_EXEC_ENABLE_EPT = 1 << 1
SECONDARY_EXEC_DESC = 1 << 2
SECONDARY_EXEC_ENABLE_RDTSCP = 1 << 3
SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE = 1 << 4
SECONDARY_EXEC_ENABLE_VPID = 1 << 5
SECONDARY_EXEC_WBINVD_EXITING = 1 << 6
SECONDARY_EXEC_UNRESTRICTED_GUEST = 1 << 7
SECONDARY_EXEC_APIC_REGISTER_VIRT = 1 << 8
SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY = 1 << 9
SECONDARY_EXEC_PAUSE_LOOP_EXITING = 1 << 10
SECONDARY_EXEC_RDRAND_EXITING = 1 << 11
SECONDARY_EXEC_ENABLE_INVPCID = 1 << 12
SECONDARY_EXEC_ENABLE_VMFUNC = 1 << 13
SECONDARY_EXEC_SHADOW_VMCS = 1 << 14
SECONDARY_EXEC_ENCLS_EXITING = 1 << 15
SECONDARY_EXEC_RDSEED_EXITING = 1 << 16
SECONDARY_EXEC_ENABLE_PML = 1 << 17
SECONDARY_EXEC_EPT_VIOLATION_VE = 1 << 18
SECONDARY_EXEC_PT_CONCEAL_VMX = 1 << 19
SECONDARY_EXEC_ENABLE_XSAVES = 1 << 20
SECONDARY_EXEC_MODE_BASED_EPT_EXEC = 1 << 22
SECONDARY_EXEC_PT_USE_GPA = 1 << 24
SECONDARY_EXEC_TSC_SCALING = 1 << 25
SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE = 1 << 26
SECONDARY_EXEC_BUS_LOCK_DETECTION = 1 << 30
SECONDARY_EXEC_NOTIFY_VM_EXITING = 1 << 31


# ---------------------------------------------------------------- CR and DR access exits

class CrAccessType(IntEnum):
    """Exit qualification bits 5:4 for control-register accesses (SDM table 28-3)."""

    MOV_TO_CR = 0
    MOV_FROM_CR = 1
    CLTS = 2
    LMSW = 3


class CrExitQual(NamedTuple):
    """Exit qualification for control-register accesses (SDM table 28-3)."""

    cr: int                 # bits 3:0 (0 for CLTS and LMSW)
    access: CrAccessType    # bits 5:4
    lmsw_mem: bool = False  # bit 6: LMSW operand type, 1 = memory
    gpr: int = 0            # bits 11:8: MOV CR general register (0 RAX ... 15 R15)
    lmsw_source: int = 0    # bits 31:16: LMSW source data

    def encode(self) -> int:
        return ((self.cr & 0xF) | (int(self.access) << 4) | (self.lmsw_mem << 6) | ((self.gpr & 0xF) << 8)
                | ((self.lmsw_source & 0xFFFF) << 16))

    @classmethod
    def decode(cls, q: int) -> "CrExitQual":
        return cls(q & 0xF, CrAccessType((q >> 4) & 3), bool(q & 0x40), (q >> 8) & 0xF, (q >> 16) & 0xFFFF)


class DrExitQual(NamedTuple):
    """Exit qualification for MOV DR (SDM table 28-4)."""

    dr: int          # bits 2:0
    from_dr: bool    # bit 4: 0 = MOV to DR, 1 = MOV from DR
    gpr: int = 0     # bits 11:8

    def encode(self) -> int:
        return (self.dr & 7) | (self.from_dr << 4) | ((self.gpr & 0xF) << 8)

    @classmethod
    def decode(cls, q: int) -> "DrExitQual":
        return cls(q & 7, bool(q & 0x10), (q >> 8) & 0xF)


GPR_ORDER = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")   # the qualification's GPR numbers


# What the CPU decides for MOV CR / CLTS / LMSW / MOV DR in VMX non-root operation (SDM 26.1.3,
# 25.3).  Pure functions of the VMCS, so the silicon and the tests share one statement of the rule.

def _guest_host(vmcs: Vmcs, cr: int) -> tuple[int, int]:
    if cr == 0:
        return vmcs.cr0_guest_host_mask, vmcs.cr0_read_shadow
    return vmcs.cr4_guest_host_mask, vmcs.cr4_read_shadow


def cr_write_exits(vmcs: Vmcs, cr: int, value: int) -> bool:
    """MOV to CR`cr` with source `value`: does it cause a VM exit?

    CR0/CR4: when any bit set in the guest/host mask differs between the source and the read
    shadow.  CR3: when CR3-load exiting is 1 (the CR3-target list is empty in KVM).  CR8: when
    CR8-load exiting is 1.  Other CR numbers do not exist (#UD before any exit).
    """
    if cr in (0, 4):
        mask, shadow = _guest_host(vmcs, cr)
        return bool((value ^ shadow) & mask)
    if cr == 3:
        return bool(vmcs.cpu_based_vm_exec_control & CPU_BASED_CR3_LOAD_EXITING)
    if cr == 8:
        return bool(vmcs.cpu_based_vm_exec_control & CPU_BASED_CR8_LOAD_EXITING)
    return False


def cr_write_value(vmcs: Vmcs, cr: int, cpu_value: int, value: int) -> int:
    """What a MOV to CR0/CR4 that did not exit leaves in the CPU's register: the source, except
    that bits set in the guest/host mask keep their current value (SDM 25.3)."""
    mask, _ = _guest_host(vmcs, cr)
    return (value & ~mask) | (cpu_value & mask)


def cr_read_exits(vmcs: Vmcs, cr: int) -> bool:
    """MOV from CR`cr`: CR0/CR4 never exit; CR3 and CR8 exit on their store-exiting controls."""
    if cr == 3:
        return bool(vmcs.cpu_based_vm_exec_control & CPU_BASED_CR3_STORE_EXITING)
    if cr == 8:
        return bool(vmcs.cpu_based_vm_exec_control & CPU_BASED_CR8_STORE_EXITING)
    return False


def cr_read_value(vmcs: Vmcs, cr: int, cpu_value: int) -> int:
    """MOV from CR0/CR4 (and SMSW): guest-owned bits from the CPU, masked bits from the read shadow."""
    mask, shadow = _guest_host(vmcs, cr)
    return (cpu_value & ~mask) | (shadow & mask)


X86_CR0_TS_BIT = 1 << 3


def clts_exits(vmcs: Vmcs) -> bool:
    """CLTS exits when CR0.TS is host-owned and the read shadow has TS set."""
    return bool(vmcs.cr0_guest_host_mask & vmcs.cr0_read_shadow & X86_CR0_TS_BIT)


def lmsw_exits(vmcs: Vmcs, source: int) -> bool:
    """LMSW exits when it would set a host-owned PE that the shadow has clear, or change any
    host-owned MP/EM/TS away from the shadow (LMSW never clears PE)."""
    mask, shadow = vmcs.cr0_guest_host_mask, vmcs.cr0_read_shadow
    if mask & 1 and source & 1 and not shadow & 1:
        return True
    return bool((source ^ shadow) & mask & 0xE)


def lmsw_value(vmcs: Vmcs, cpu_cr0: int, source: int) -> int:
    """CR0 after an LMSW that did not exit: bits 3:1 from the source, PE only set, host-owned kept."""
    new = (cpu_cr0 & ~0xE) | (source & 0xF) | (cpu_cr0 & 1)
    return cr_write_value(vmcs, 0, cpu_cr0, new)


def dr_access_exits(vmcs: Vmcs) -> bool:
    """MOV to/from any DR exits when MOV-DR exiting is 1.  Unlike most exits it comes before the
    CPL>0 #GP and the CR4.DE #UD for DR4/DR5 (SDM 26.1.1); KVM's handle_dr raises those."""
    return bool(vmcs.cpu_based_vm_exec_control & CPU_BASED_MOV_DR_EXITING)


# Instructions whose exit is decided by one control bit alone: mnemonic -> (which field, bit).
# The silicon consults these at execution; faults based on privilege (CPL, CR4.TSD/PCE) and #UD
# come first (SDM 26.1.1), except for MOV DR (above).
EXIT_CONTROLS: dict[str, tuple[str, int]] = {
    "hlt": ("cpu_based_vm_exec_control", CPU_BASED_HLT_EXITING),
    "invlpg": ("cpu_based_vm_exec_control", CPU_BASED_INVLPG_EXITING),
    "mwait": ("cpu_based_vm_exec_control", CPU_BASED_MWAIT_EXITING),
    "monitor": ("cpu_based_vm_exec_control", CPU_BASED_MONITOR_EXITING),
    "rdpmc": ("cpu_based_vm_exec_control", CPU_BASED_RDPMC_EXITING),
    "rdtsc": ("cpu_based_vm_exec_control", CPU_BASED_RDTSC_EXITING),
    "pause": ("cpu_based_vm_exec_control", CPU_BASED_PAUSE_EXITING),   # PLE is separate (below)
    "wbinvd": ("secondary_vm_exec_control", SECONDARY_EXEC_WBINVD_EXITING),
    "rdrand": ("secondary_vm_exec_control", SECONDARY_EXEC_RDRAND_EXITING),
    "rdseed": ("secondary_vm_exec_control", SECONDARY_EXEC_RDSEED_EXITING),
    **{m: ("secondary_vm_exec_control", SECONDARY_EXEC_DESC)
       for m in ("lgdt", "lidt", "sgdt", "sidt", "lldt", "ltr", "sldt", "str")},
}


def insn_exits(vmcs: Vmcs, mnemonic: str) -> bool:
    """Does this instruction exit under the current controls (those in EXIT_CONTROLS)?"""
    field, bit = EXIT_CONTROLS[mnemonic]
    return bool(getattr(vmcs, field) & bit)


def pause_loop_exits(vmcs: Vmcs, cpl: int, loop_cycles: int) -> bool:
    """PAUSE-loop exiting (SDM 26.1.3): at CPL0 only, a PAUSE exits once the loop it belongs to
    (PAUSEs at most PLE_Gap cycles apart) has spun longer than PLE_Window cycles.  Timing-based:
    a silicon without a cycle count may pass loop_cycles = 0 (a PAUSE then never exits)."""
    if cpl or not vmcs.secondary_vm_exec_control & SECONDARY_EXEC_PAUSE_LOOP_EXITING:
        return False
    return loop_cycles > vmcs.ple_window


def invpcid_exits(vmcs: Vmcs) -> bool | None:
    """INVPCID: #UD unless enable-INVPCID is 1 (None here); then it exits iff INVLPG exiting is 1."""
    if not vmcs.secondary_vm_exec_control & SECONDARY_EXEC_ENABLE_INVPCID:
        return None
    return bool(vmcs.cpu_based_vm_exec_control & CPU_BASED_INVLPG_EXITING)
