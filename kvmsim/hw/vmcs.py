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


@dataclass(slots=True)
class Vmcs:
    """The VMCS fields this model reads and writes (names after the kernel's field enums)."""

    vm_exit_reason: int = 0
    exit_qualification: int = 0
    vm_exit_instruction_len: int = 0
    vm_exit_intr_info: int = 0
    vm_exit_intr_error_code: int = 0
    idt_vectoring_info_field: int = 0
    idt_vectoring_error_code: int = 0
    guest_physical_address: int = 0
    guest_linear_address: int = 0
    vm_entry_intr_info_field: int = 0
    vm_entry_exception_error_code: int = 0
    vm_entry_instruction_len: int = 0
    guest_interruptibility_info: int = 0
    guest_pending_dbg_exceptions: int = 0
    vm_instruction_error: int = 0
    cpu_based_vm_exec_control: int = 0

    def clear_exit_info(self) -> None:
        self.exit_qualification = self.vm_exit_instruction_len = 0
        self.vm_exit_intr_info = self.vm_exit_intr_error_code = 0
        self.idt_vectoring_info_field = self.idt_vectoring_error_code = 0
        self.guest_physical_address = self.guest_linear_address = 0


NMI_HOST_INTR_INFO = 0x80000202   # valid | NMI type | vector 2: a host NMI while the guest ran
GUEST_INTR_STATE_STI = 1 << 0
GUEST_INTR_STATE_MOV_SS = 1 << 1
GUEST_INTR_STATE_NMI = 1 << 3
CPU_BASED_INTR_WINDOW_EXITING = 1 << 2
CPU_BASED_NMI_WINDOW_EXITING = 1 << 22
