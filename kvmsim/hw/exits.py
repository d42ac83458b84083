"""Which guest instructions leave VMX non-root mode under KVM's VM-execution controls.

One table: instruction → exit reason (or a silicon-level action such as delivering a
software interrupt).  The controls are KVM's required ones (vmx.h): unconditional I/O
exiting, HLT, MWAIT/MONITOR, RDPMC, MSR bitmaps; CPUID, VMCALL, INVD, XSETBV and the
VMX instructions exit unconditionally.  RDTSC does not exit (TSC offsetting).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from capstone import x86_const as X

from kvmsim.hw.vmcs import ExitReason


class Action(Enum):
    """What the CPU does when it reaches the instruction."""

    EXIT = "exit"            # VM exit with `reason`
    MSR = "msr"              # exit only if the MSR bitmap intercepts ECX
    SOFT_INT = "soft_int"    # INT n / INT3 / INTO / INT1: delivered through the guest IDT
    IRET = "iret"            # no exit; the CPU ends NMI blocking (and may take an NMI-window exit)


@dataclass(frozen=True, slots=True)
class ExitingInsn:
    action: Action
    reason: ExitReason | None = None


_E = lambda r: ExitingInsn(Action.EXIT, r)  # noqa: E731

EXITING_INSNS: dict[int, ExitingInsn] = {
    X.X86_INS_IN:       _E(ExitReason.IO_INSTRUCTION),
    X.X86_INS_OUT:      _E(ExitReason.IO_INSTRUCTION),
    X.X86_INS_INSB:     _E(ExitReason.IO_INSTRUCTION),
    X.X86_INS_INSW:     _E(ExitReason.IO_INSTRUCTION),
    X.X86_INS_INSD:     _E(ExitReason.IO_INSTRUCTION),
    X.X86_INS_OUTSB:    _E(ExitReason.IO_INSTRUCTION),
    X.X86_INS_OUTSW:    _E(ExitReason.IO_INSTRUCTION),
    X.X86_INS_OUTSD:    _E(ExitReason.IO_INSTRUCTION),
    X.X86_INS_HLT:      _E(ExitReason.HLT),
    X.X86_INS_CPUID:    _E(ExitReason.CPUID),
    X.X86_INS_RDMSR:    ExitingInsn(Action.MSR, ExitReason.MSR_READ),
    X.X86_INS_WRMSR:    ExitingInsn(Action.MSR, ExitReason.MSR_WRITE),
    X.X86_INS_VMCALL:   _E(ExitReason.VMCALL),
    X.X86_INS_INVD:     _E(ExitReason.INVD),
    X.X86_INS_WBINVD:   _E(ExitReason.WBINVD),
    X.X86_INS_XSETBV:   _E(ExitReason.XSETBV),
    X.X86_INS_RDPMC:    _E(ExitReason.RDPMC),
    X.X86_INS_MONITOR:  _E(ExitReason.MONITOR_INSTRUCTION),
    X.X86_INS_MWAIT:    _E(ExitReason.MWAIT_INSTRUCTION),
    X.X86_INS_VMCLEAR:  _E(ExitReason.VMCLEAR),
    X.X86_INS_VMLAUNCH: _E(ExitReason.VMLAUNCH),
    X.X86_INS_VMPTRLD:  _E(ExitReason.VMPTRLD),
    X.X86_INS_VMPTRST:  _E(ExitReason.VMPTRST),
    X.X86_INS_VMREAD:   _E(ExitReason.VMREAD),
    X.X86_INS_VMRESUME: _E(ExitReason.VMRESUME),
    X.X86_INS_VMWRITE:  _E(ExitReason.VMWRITE),
    X.X86_INS_VMXOFF:   _E(ExitReason.VMOFF),
    X.X86_INS_VMXON:    _E(ExitReason.VMON),
    X.X86_INS_INVEPT:   _E(ExitReason.INVEPT),
    X.X86_INS_INVVPID:  _E(ExitReason.INVVPID),
    X.X86_INS_VMFUNC:   _E(ExitReason.VMFUNC),
    X.X86_INS_INT:      ExitingInsn(Action.SOFT_INT),
    X.X86_INS_INT3:     ExitingInsn(Action.SOFT_INT),
    X.X86_INS_INTO:     ExitingInsn(Action.SOFT_INT),
    X.X86_INS_INT1:     ExitingInsn(Action.SOFT_INT),
    X.X86_INS_IRET:     ExitingInsn(Action.IRET),
    X.X86_INS_IRETD:    ExitingInsn(Action.IRET),
    X.X86_INS_IRETQ:    ExitingInsn(Action.IRET),
}

LEGACY_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})


@dataclass(frozen=True, slots=True)
class IoInsn:
    """What the CPU knows about an I/O instruction when it builds the exit qualification."""

    size: int
    is_in: bool
    string: bool
    rep: bool
    imm_port: int | None


def decode_io(code: bytes, default_op32: bool, long_mode: bool) -> IoInsn:
    """Decode IN/OUT/INS/OUTS from raw bytes (prefixes, then one opcode byte)."""
    op16 = not default_op32
    rep = False
    i = 0
    while code[i] in LEGACY_PREFIXES or (long_mode and 0x40 <= code[i] <= 0x4F):
        if code[i] == 0x66:
            op16 = default_op32
        elif code[i] in (0xF2, 0xF3):
            rep = True
        i += 1
    op = code[i]
    wide = 2 if op16 else 4
    size = 1 if op in (0xE4, 0xE6, 0xEC, 0xEE, 0x6C, 0x6E) else wide
    string = op in (0x6C, 0x6D, 0x6E, 0x6F)
    is_in = op in (0xE4, 0xE5, 0xEC, 0xED, 0x6C, 0x6D)
    imm = code[i + 1] if op in (0xE4, 0xE5, 0xE6, 0xE7) else None
    return IoInsn(size, is_in, string, rep and string, imm)
