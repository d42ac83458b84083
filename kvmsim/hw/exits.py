"""Which guest instructions leave VMX non-root mode under KVM's VM-execution controls.

One table: instruction → exit reason (or a silicon-level action such as delivering a
software interrupt).  The controls are KVM's required ones (vmx.h): unconditional I/O
exiting, HLT, MWAIT/MONITOR, RDPMC, MSR bitmaps; CPUID, VMCALL, INVD, XSETBV and the
VMX instructions exit unconditionally.  RDTSC does not exit (TSC offsetting).

CANDIDATE is the byte pattern of every instruction start that may need the CPU's attention
(trap.py hooks each match); `classify` decides, from a known instruction start, what it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from capstone import x86_const as X

from kvmsim.hw.vmcs import ExitReason


class Action(Enum):
    """What the CPU does when it reaches the instruction."""

    EXIT = "exit"            # VM exit with `reason`
    MSR = "msr"              # exit only if the MSR bitmap intercepts ECX
    SOFT_INT = "soft_int"    # INT n / INT3 / INTO / INT1: delivered through the guest IDT
    IRET = "iret"            # no exit; the CPU ends NMI blocking (and may take an NMI-window exit)
    UD = "ud"                # the CPU raises #UD (Intel has no such instruction; unicorn runs one)
    CR = "cr"                # MOV CR/DR, CLTS, LMSW, SMSW: the VMCS rule decides (ctrlregs.py)
    CONTROL = "control"      # exits iff its VM-execution control is 1 (vmcs.EXIT_CONTROLS)
    FAR = "far"              # CALL/JMP far: TASK_SWITCH when the selector names a TSS or task gate (taskswitch.py)


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
    X.X86_INS_INVPCID:  _E(ExitReason.INVPCID),    # exits with INVLPG exiting, else #UD or native (cpu.py)
    X.X86_INS_INT:      ExitingInsn(Action.SOFT_INT),
    X.X86_INS_INT3:     ExitingInsn(Action.SOFT_INT),
    X.X86_INS_INTO:     ExitingInsn(Action.SOFT_INT),
    X.X86_INS_INT1:     ExitingInsn(Action.SOFT_INT),
    X.X86_INS_IRET:     ExitingInsn(Action.IRET),
    X.X86_INS_IRETD:    ExitingInsn(Action.IRET),
    X.X86_INS_IRETQ:    ExitingInsn(Action.IRET),
    X.X86_INS_LCALL:    ExitingInsn(Action.FAR, ExitReason.TASK_SWITCH),
    X.X86_INS_LJMP:     ExitingInsn(Action.FAR, ExitReason.TASK_SWITCH),
    X.X86_INS_MOV:      ExitingInsn(Action.CR),       # MOV CR/DR only (classify turns down other MOVs)
    X.X86_INS_CLTS:     ExitingInsn(Action.CR),
    X.X86_INS_LMSW:     ExitingInsn(Action.CR),
    X.X86_INS_SMSW:     ExitingInsn(Action.CR),
    X.X86_INS_INVLPG:   ExitingInsn(Action.CONTROL, ExitReason.INVLPG),
    X.X86_INS_RDRAND:   ExitingInsn(Action.CONTROL, ExitReason.RDRAND),
    X.X86_INS_RDSEED:   ExitingInsn(Action.CONTROL, ExitReason.RDSEED),
    X.X86_INS_PAUSE:    ExitingInsn(Action.CONTROL, ExitReason.PAUSE_INSTRUCTION),
    X.X86_INS_LGDT:     ExitingInsn(Action.CONTROL, ExitReason.GDTR_IDTR),
    X.X86_INS_LIDT:     ExitingInsn(Action.CONTROL, ExitReason.GDTR_IDTR),
    X.X86_INS_SGDT:     ExitingInsn(Action.CONTROL, ExitReason.GDTR_IDTR),
    X.X86_INS_SIDT:     ExitingInsn(Action.CONTROL, ExitReason.GDTR_IDTR),
    X.X86_INS_LLDT:     ExitingInsn(Action.CONTROL, ExitReason.LDTR_TR),
    X.X86_INS_LTR:      ExitingInsn(Action.CONTROL, ExitReason.LDTR_TR),
    X.X86_INS_SLDT:     ExitingInsn(Action.CONTROL, ExitReason.LDTR_TR),
    X.X86_INS_STR:      ExitingInsn(Action.CONTROL, ExitReason.LDTR_TR),
}
# Privilege faults come before these instructions' VM exits (SDM 26.1.1): at CPL > 0 the CPU
# raises this vector instead (RDPMC only while CR4.PCE is clear).  VMCALL, CPUID, the VMX
# instructions (whose exit comes before their CPL check) and MOV DR are not here.
CPL0_FAULT: dict[str, int] = {
    **{m: 13 for m in ("hlt", "rdmsr", "wrmsr", "invd", "wbinvd", "xsetbv", "invlpg", "lgdt", "lidt",
                       "lldt", "ltr", "rdpmc", "invpcid")},
    "monitor": 6, "mwait": 6,
}
# Exits that also depend on a VM-execution control (vmcs.EXIT_CONTROLS); the others in the table
# above are unconditional or always enabled by KVM.
CONTROLLED = frozenset({"hlt", "mwait", "monitor", "rdpmc", "wbinvd"})
_UD = ExitingInsn(Action.UD)
_FAR = ExitingInsn(Action.FAR, ExitReason.TASK_SWITCH)

MAX_INSN = 15
_PREFIX = rb"[\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3\x40-\x4f]"
_NOT_REG0 = rb"[\x08-\x3f\x48-\x7f\x88-\xbf\xc8-\xff]"       # a ModRM byte whose reg field is not 0
_MEM_REG67 = rb"[\x30-\x3f\x70-\x7f\xb0-\xbf]"                # ModRM: memory operand, reg 6 or 7
# The opcodes of the table above (after any prefixes), as bytes.  REX bytes count as prefixes in
# every mode: outside 64-bit mode a match there is INC/DEC, which classify() turns down at the stop.
_OPCODES = [
    rb"[\xe4-\xe7\xec-\xef\x6c-\x6f]",                      # IN, OUT, INS, OUTS
    rb"[\xf4\xcc\xcd\xce\xf1\xcf]",                          # HLT, INT3, INT n, INTO, INT1, IRET
    rb"\x8f" + _NOT_REG0,                                     # 8F /1-7: #UD on Intel
    rb"\x0f[\x06\x08\x09\x30\x32\x33\xa2\x20-\x23\x78\x79]",  # CLTS INVD WBINVD WRMSR RDMSR RDPMC CPUID MOV CR/DR VMREAD/WRITE
    rb"\x0f\x01[\xc1-\xc4\xc8\xc9\xd1\xd4]",                   # VMCALL..VMXOFF, MONITOR, MWAIT, XSETBV, VMFUNC
    rb"\x0f\x01[\x20-\x27\x30-\x37\x60-\x67\x70-\x77\xa0-\xa7\xb0-\xb7\xe0-\xe7\xf0-\xf7]",   # SMSW, LMSW
    rb"\x0f\xc7" + _MEM_REG67,                                # VMPTRLD, VMCLEAR, VMXON, VMPTRST
    rb"\x0f\x38[\x80\x81\x82]",                              # INVEPT, INVVPID, INVPCID
    rb"[\x9a\xea]", rb"\xff[\x18-\x1f\x28-\x2f\x58-\x5f\x68-\x6f\x98-\x9f\xa8-\xaf]",   # CALL/JMP far
]
# Instructions unicorn runs unlike VMX silicon (hw/fixups.py corrects them at the stop), narrowed
# by ModRM where the table's match() would turn the rest down anyway.  LOCK-prefixed instructions
# are candidates through _LOCKED below (lock-ud, lock-neg).
_MEM = rb"[\x00-\xbf]"
_FIXUP_OPCODES = [
    rb"\x0f[\x28\x29\x2b\x6f\x7f\xe7]" + _MEM, rb"\x0f\x38\x2a" + _MEM,   # aligned SSE moves
    rb"\x0f\x38[\xf0\xf1][\xc0-\xff]",                                   # MOVBE register form
    rb"\x0f[\xbc\xbd]",                                                  # BSF/BSR
    rb"\x0f\x01[\x00-\x0f\x40-\x4f\x80-\x8f]",                           # SGDT/SIDT
    rb"\x0f\xae" + _MEM, rb"[\xd9\xdd][\x30-\x3f\x70-\x7f\xb0-\xbf]",          # FXSAVE/XSAVE/FNSTENV/FNSAVE
    rb"\x0f[\x05\x07\x34]",                                              # SYSCALL, SYSRET, SYSENTER
]
# Data segment loads (MOV Sreg, POP DS/ES/FS/GS, LDS/LES/LFS/LGS/LSS): segcheck.py looks at what
# they loaded before the next instruction runs.
_SEG_LOADS = [rb"[\x8e\x07\x1f\xc4\xc5]", rb"\x0f[\xa1\xa9\xb2\xb4\xb5]"]
_PAUSE = rb"[\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\x40-\x4f]{0,14}\xf3" + _PREFIX + rb"{0,13}\x90"   # F3 90
_LOCKED = rb"[\x26\x2e\x36\x3e\x64\x65\x66\x67\xf2\xf3\x40-\x4f]{0,14}\xf0"
# Opcodes that matter only while their control is 1 (a PAUSE in a spin loop must not stop the CPU
# when PAUSE exiting is off): mnemonic -> pattern.
_CONTROLLED_OPCODES = {
    "invlpg": rb"\x0f\x01[\x38-\x3f\x78-\x7f\xb8-\xbf]",
    "rdrand": rb"\x0f\xc7[\xf0-\xf7]", "rdseed": rb"\x0f\xc7[\xf8-\xff]",
    "lgdt": rb"\x0f\x01[\x00-\x1f\x40-\x5f\x80-\x9f]", "lldt": rb"\x0f\x00[\x00-\x1f\x40-\x5f\x80-\x9f\xc0-\xdf]",
}


def candidate_pattern(controlled: frozenset[str] = frozenset()) -> re.Pattern[bytes]:
    """Every position that may start an instruction of interest, given which controlled exits are on
    (`controlled` holds EXIT_CONTROLS mnemonics; the descriptor-table ones share two patterns)."""
    ops = list(_OPCODES) + _FIXUP_OPCODES + _SEG_LOADS
    for name, pat in _CONTROLLED_OPCODES.items():
        if name in controlled or (name == "lgdt" and controlled & {"lidt", "sgdt", "sidt"}) or \
                (name == "lldt" and controlled & {"ltr", "sldt", "str"}):
            ops.append(pat)
    tops = [_LOCKED] + ([_PAUSE] if "pause" in controlled else [])
    return re.compile(rb"(?=" + _PREFIX + rb"{0,14}(?:" + b"|".join(ops) + rb")|" + b"|".join(tops) + rb")",
                      re.DOTALL)


CANDIDATE = candidate_pattern()
_LEGACY = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})
_disasm: dict[int, Cs] = {}


def _cs(cs_mode: int) -> Cs:
    md = _disasm.get(cs_mode)
    if md is None:
        md = _disasm[cs_mode] = Cs(CS_ARCH_X86, cs_mode)
        md.detail = False
    return md


_TRANSFERS = ("j", "call", "ret", "lret", "iret", "loop", "int", "sys", "ljmp", "lcall", "ud", "hlt", "rsm")


def falls_through(mnemonic: str) -> bool:
    """Whether the next instruction is the one after it (no jump, call, return, interrupt...).
    Prefixed mnemonics ("rep movsb", "lock ...") fall through too."""
    last = mnemonic.split()[-1] if mnemonic else ""
    return bool(last) and not last.startswith(_TRANSFERS)


def insn_starts(code: bytes, cs_mode: int, icount: int = 0) -> set[int] | None:
    """Offsets of the instructions of a translation block (its bytes in `code`, `icount` instructions
    if known), split as the CPU split them; None where capstone does not end exactly where the
    block does (then any offset may start one)."""
    starts, end = set(), 0
    for off, size, _m, _o in _cs(cs_mode).disasm_lite(code, 0):
        if off != end:
            break
        starts.add(off)
        end = off + size
    if end != len(code) or (icount and len(starts) != icount):
        return None
    return starts


def insn_length(code: bytes, cs_mode: int) -> int:
    """Length of the instruction at code[0] (0 if it does not decode)."""
    insn = next(_cs(cs_mode).disasm(code, 0, 1), None)
    return insn.size if insn is not None else 0


CS_MODES = {"long64": CS_MODE_64, "prot32": CS_MODE_32, "compat": CS_MODE_32}   # else 16-bit
# VMX instructions raise #UD, before any VM exit, outside protected mode, in virtual-8086 mode and in
# compatibility mode (SDM Vol. 3C ch. 31 "Operation"); VMCALL and VMFUNC are not limited so.
_VMX_PROTECTED_ONLY = frozenset({ExitReason.VMCLEAR, ExitReason.VMLAUNCH, ExitReason.VMPTRLD,
                                 ExitReason.VMPTRST, ExitReason.VMREAD, ExitReason.VMRESUME, ExitReason.VMWRITE,
                                 ExitReason.VMOFF, ExitReason.VMON, ExitReason.INVEPT, ExitReason.INVVPID})


def cs_mode_of(mode: str) -> int:
    """The capstone mode that decodes like the CPU in `mode` (hw/registers.py's names)."""
    return CS_MODES.get(mode, CS_MODE_16)


def classify(code: bytes, mode: str) -> tuple[ExitingInsn | None, int, str]:
    """The instruction that starts at code[0], decoded as the CPU in `mode` does: (what the CPU
    does with it, or None for an ordinary instruction; its length; its mnemonic)."""
    cs_mode = cs_mode_of(mode)
    md = _cs(cs_mode)
    i, lock = 0, False
    while i < len(code) - 1 and (code[i] in _LEGACY or (cs_mode == CS_MODE_64 and 0x40 <= code[i] <= 0x4F)):
        lock |= code[i] == 0xF0
        i += 1
    if lock and CANDIDATE.match(code, i):
        return _UD, 0, "(bad)"                     # LOCK on a non-lockable instruction: #UD first
    if code[i:i + 1] == b"\x8f" and i + 1 < len(code) and (code[i + 1] >> 3) & 7:
        return _UD, 0, "(bad)"                     # Group 1A has only /0 on Intel
    insn = next(md.disasm(code, 0, 1), None)
    if insn is None:
        return None, 0, ""
    spec = EXITING_INSNS.get(insn.id)
    if spec is not None and spec.reason in _VMX_PROTECTED_ONLY and mode in ("real", "vm86", "compat"):
        return _UD, insn.size, insn.mnemonic
    if insn.mnemonic == "into" and mode == "long64":
        return _UD, insn.size, insn.mnemonic       # INTO does not exist in 64-bit mode
    if insn.mnemonic in ("sldt", "str", "lldt", "ltr") and mode in ("real", "vm86"):
        return _UD, insn.size, insn.mnemonic       # not recognised outside protected mode: #UD first
    if code[i] == 0xFF and i + 1 < len(code) and code[i + 1] < 0xC0 and (code[i + 1] >> 3) & 7 in (3, 5):
        spec = _FAR                                # FF /3, FF /5: CALL/JMP m16:16/32 (capstone names them call/jmp)
    if spec is not None and insn.id == X.X86_INS_MOV and not (
            code[i] == 0x0F and i + 1 < len(code) and 0x20 <= code[i + 1] <= 0x23):
        spec = None                                # an ordinary MOV
    return spec, insn.size, insn.mnemonic

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
