"""Instructions unicorn (QEMU 5 TCG) executes differently from VMX silicon, done right here.

Two kinds of correction:

* `FIXUPS`, a table of instructions the CPU must stop before (the execution-time trap in
  cpu.py stops on them as it does on exiting instructions) so that `run` does what the
  silicon does.  A record names the opcode bytes that make an instruction a candidate (after
  the legacy and REX prefixes), `match(code, mode)` gives the instruction's length when this
  exact instruction needs the fixup, and `run(cpu, code, length)` performs it on the
  SiliconVcpu: it raises an exception, or completes the instruction (stepping it in unicorn
  and correcting the result, or doing it in software) and advances RIP.  `run` returns True
  iff it ended in a VM exit.  A `run` that executes the instruction in unicorn does it through
  the CPU's `_step_native` (which lifts a stop hook at RIP meanwhile).  `apply_at_rip(cpu)`
  does the lookup and the run for the instruction at RIP (None: no fixup, run it natively).
* `correct_exception`: faults unicorn reports through UC_HOOK_INTR whose vector or error code
  QEMU chooses differently (a non-canonical stack access is #SS, not #GP; a read-modify-write
  of a not-present page is a write fault).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from capstone import CS_AC_WRITE, CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from capstone.x86_const import (X86_OP_MEM, X86_REG_BP, X86_REG_EBP, X86_REG_ESP, X86_REG_INVALID,
                                X86_REG_RBP, X86_REG_RSP, X86_REG_SP, X86_REG_SS)
from unicorn import UcError

from kvmsim.hw import fastsys, paging
from kvmsim.hw.vmcs import Vector

if TYPE_CHECKING:
    from kvmsim.hw.cpu import SiliconVcpu

LEGACY_PREFIXES = frozenset({0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65})
EFLAGS_CF, EFLAGS_PF, EFLAGS_AF, EFLAGS_ZF, EFLAGS_SF, EFLAGS_OF = 1, 4, 0x10, 0x40, 0x80, 0x800
ARITH_FLAGS = EFLAGS_CF | EFLAGS_PF | EFLAGS_AF | EFLAGS_ZF | EFLAGS_SF | EFLAGS_OF
X86_CR4_UMIP = 1 << 11
X86_CR4_OSFXSR = 1 << 9
X86_CR0_EM, X86_CR0_TS = 1 << 2, 1 << 3
_CS_MODES = {"real": CS_MODE_16, "vm86": CS_MODE_16, "prot16": CS_MODE_16, "long64": CS_MODE_64}
_STACK_REGS = frozenset({X86_REG_RSP, X86_REG_RBP, X86_REG_ESP, X86_REG_EBP, X86_REG_SP, X86_REG_BP})
_STACK_MNEMONICS = frozenset({"push", "pop", "call", "ret", "leave", "enter", "pushfq", "popfq", "iretq",
                              "pushf", "popf", "lret"})


@dataclass(frozen=True, slots=True)
class Prefixed:
    """An instruction's prefixes split off: where the opcode starts and what came before."""

    prefixes: frozenset[int]
    rex: int          # 0 when there is none (REX exists in 64-bit mode only)
    op: int           # index of the first opcode byte


def split_prefixes(code: bytes, mode: str) -> Prefixed:
    i, seen, rex = 0, set(), 0
    while i < len(code) and code[i] in LEGACY_PREFIXES:
        seen.add(code[i])
        i += 1
    if mode == "long64" and i < len(code) and 0x40 <= code[i] <= 0x4F:
        rex = code[i]
        i += 1
    return Prefixed(frozenset(seen), rex, i)


_CS: dict[int, Cs] = {}


def decode(code: bytes, mode: str):
    """Capstone's decode (with operand details) of the instruction at the start of `code`."""
    m = _CS_MODES.get(mode, CS_MODE_32)
    md = _CS.get(m)
    if md is None:
        md = _CS[m] = Cs(CS_ARCH_X86, m)
        md.detail = True
    return next(md.disasm(code, 0), None)


@dataclass(frozen=True)
class Fixup:
    """One instruction class unicorn gets wrong, and what the silicon does instead."""

    name: str
    opcodes: tuple[bytes, ...]                       # candidates: opcode bytes after the prefixes
    match: Callable[[bytes, str], int | None]        # its length, when this instruction needs the fixup
    run: Callable[["SiliconVcpu", bytes, int], bool]  # do it; True iff that ended in a VM exit
    why: str
    prefix: int | None = None                        # or: every instruction with this legacy prefix


# ------------------------------------------------------------------ shared pieces of `run`

_GPR16 = frozenset({"ax", "bx", "cx", "dx", "si", "di", "sp", "bp"})


def _reg_value(cpu: "SiliconVcpu", insn, reg: int) -> int:
    """A capstone register's value (0 for none; RIP-relative means the next instruction's RIP)."""
    if reg == X86_REG_INVALID:
        return 0
    name = insn.reg_name(reg)
    if name in ("riz", "eiz"):
        return 0                        # capstone's "no index" in a SIB byte
    if name in ("rip", "eip", "ip"):
        return cpu.reg("rip") + insn.size
    if name in _GPR16:
        return cpu.reg("r" + name) & 0xFFFF
    if name[0] == "e" and name[1:] in _GPR16:
        return cpu.reg("r" + name[1:]) & 0xFFFF_FFFF
    if name[0] == "r" and name[-1] == "d":
        return cpu.reg(name[:-1]) & 0xFFFF_FFFF
    return cpu.reg(name)


def mem_linear(cpu: "SiliconVcpu", insn, mode: str) -> int | None:
    """The linear address of the instruction's memory operand (None if it has none)."""
    for op in insn.operands:
        if op.type != X86_OP_MEM:
            continue
        m = op.mem
        ea = m.disp + _reg_value(cpu, insn, m.base) + _reg_value(cpu, insn, m.index) * m.scale
        addr_bits = insn.addr_size * 8
        ea &= (1 << addr_bits) - 1
        if mode == "long64":
            seg = insn.reg_name(m.segment) if m.segment != X86_REG_INVALID else ""
            base = cpu.seg_base(seg) if seg in ("fs", "gs") else 0
            return (base + ea) & 0xFFFF_FFFF_FFFF_FFFF
        if m.segment != X86_REG_INVALID:
            seg = insn.reg_name(m.segment)
        else:
            seg = "ss" if m.base in _STACK_REGS else "ds"
        return (cpu.seg_base(seg) + ea) & 0xFFFF_FFFF
    return None


class _Fault(Exception):
    """A #PF at `linear` found while checking an operand (raised as the CPU would, with CR2)."""

    def __init__(self, linear: int, pf: paging.PageFault) -> None:
        super().__init__(linear)
        self.linear, self.error_code = linear, pf.error_code


def _page_fault(cpu: "SiliconVcpu", fault: _Fault) -> bool:
    cpu.set_cr2(fault.linear)
    return cpu._exception(Vector.PF, fault.error_code)


def _ram_gpas(cpu: "SiliconVcpu", linear: int, size: int, write: bool) -> list[int] | None:
    """Translate each page of [linear, linear + size); None when any of it is not RAM (the native
    step then takes the EPT exit and KVM's emulator does the instruction).  Raises _Fault."""
    gpas, addr, left = [], linear, size
    while left:
        chunk = min(left, 0x1000 - (addr & 0xFFF))
        try:
            gpa = cpu.translate(addr, write=write)
        except paging.PageFault as pf:
            raise _Fault(addr, pf) from None
        if not cpu.gpa_is_ram(gpa) or not cpu.gpa_is_ram(gpa + chunk - 1):
            return None
        gpas.append(gpa)
        addr, left = addr + chunk, left - chunk
    return gpas


def step(cpu: "SiliconVcpu", length: int) -> bool:
    """Execute the one instruction at RIP (`length` bytes, falling through) in unicorn, through
    the CPU's own _step_native (which lifts a stop hook at RIP); True iff that ended in a VM exit.
    A stop before it ran (the first run of a page: its scan) is retried once."""
    for _ in range(2):
        rip0 = cpu.reg("rip")
        if cpu._step_native(cpu.linear_rip(), length):
            return True
        if cpu.reg("rip") != rip0:
            return False
    return False


def _advance(cpu: "SiliconVcpu", length: int) -> bool:
    cpu.set_reg("rip", cpu.reg("rip") + length)
    cpu.retired()
    return False


# ------------------------------------------------------------------ LOCK on a non-lockable instruction

# SDM "LOCK": these, with a memory destination, are the only lockable instructions.
LOCKABLE = frozenset({"add", "adc", "and", "btc", "btr", "bts", "cmpxchg", "cmpxchg8b", "cmpxchg16b", "dec",
                      "inc", "neg", "not", "or", "sbb", "sub", "xor", "xadd", "xchg"})


def _match_lock_ud(code: bytes, mode: str) -> int | None:
    p = split_prefixes(code, mode)
    if 0xF0 not in p.prefixes:
        return None
    # capstone refuses some LOCK forms (LOCK MOV): decode without the prefix bytes that are LOCK
    locks = code[:p.op].count(0xF0)
    insn = decode(bytes(b for b in code[:p.op] if b != 0xF0) + code[p.op:], mode)
    if insn is None:
        return None          # not an instruction at all: unicorn raises #UD itself
    lockable = insn.mnemonic.split()[-1] in LOCKABLE and insn.operands and insn.operands[0].type == X86_OP_MEM
    return None if lockable else insn.size + locks


def _run_lock_ud(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    """LOCK before an instruction that cannot be locked (or with a register destination) is #UD
    before any memory access; QEMU runs LOCK MOV as a MOV."""
    return cpu._exception(Vector.UD, None)


# ------------------------------------------------------------------ aligned SSE moves

ALIGNED_SSE = frozenset({"movaps", "movapd", "movdqa", "movntps", "movntpd", "movntdq", "movntdqa"})


def _match_aligned_sse(code: bytes, mode: str) -> int | None:
    insn = decode(code, mode)
    if insn is None or insn.mnemonic not in ALIGNED_SSE:
        return None
    return insn.size if any(op.type == X86_OP_MEM for op in insn.operands) else None


def _run_aligned_sse(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    """SDM: a 16-byte-aligned SSE move to a misaligned operand is #GP(0), whatever the memory.
    #UD (CR4.OSFXSR clear, CR0.EM set) and #NM (CR0.TS) come first: unicorn raises those itself."""
    if not cpu.cr(4) & X86_CR4_OSFXSR or cpu.cr(0) & (X86_CR0_EM | X86_CR0_TS):
        return step(cpu, length)
    mode = cpu.mode()
    linear = mem_linear(cpu, decode(code, mode), mode)
    if linear is not None and linear & 15:
        return cpu._exception(Vector.GP, 0)
    return step(cpu, length)


# ------------------------------------------------------------------ MOVBE register form

def _match_movbe_reg(code: bytes, mode: str) -> int | None:
    p = split_prefixes(code, mode)
    i = p.op
    if code[i:i + 3] not in (b"\x0f\x38\xf0", b"\x0f\x38\xf1") or 0xF2 in p.prefixes or len(code) <= i + 3:
        return None   # F2 0F 38 F0/F1 is CRC32, whose register form is valid
    return i + 4 if code[i + 3] >> 6 == 3 else None


def _run_ud(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    """MOVBE takes a memory operand only: ModRM.mod = 3 is #UD (QEMU runs it as a BSWAP-move)."""
    return cpu._exception(Vector.UD, None)


# ------------------------------------------------------------------ LOCK NEG on RAM

def _match_lock_neg(code: bytes, mode: str) -> int | None:
    p = split_prefixes(code, mode)
    i = p.op
    if 0xF0 not in p.prefixes or i + 1 >= len(code) or code[i] not in (0xF6, 0xF7):
        return None
    modrm = code[i + 1]
    if (modrm >> 3) & 7 != 3 or modrm >> 6 == 3:
        return None
    insn = decode(code, mode)
    return insn.size if insn is not None and insn.mnemonic.split()[-1] == "neg" else None


def parity_flag(value: int) -> int:
    return EFLAGS_PF if bin(value & 0xFF).count("1") % 2 == 0 else 0


def neg_flags(src: int, bits: int) -> tuple[int, int]:
    """NEG's result and its six arithmetic flags (SDM: CF = source != 0, the rest from 0 - src)."""
    mask = (1 << bits) - 1
    src &= mask
    res = -src & mask
    flags = (EFLAGS_CF if src else 0) | (EFLAGS_ZF if res == 0 else 0) | parity_flag(res)
    flags |= EFLAGS_SF if res >> (bits - 1) else 0
    flags |= EFLAGS_OF if src == 1 << (bits - 1) else 0
    flags |= EFLAGS_AF if src & 0xF else 0
    return res, flags


def _run_lock_neg(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    """QEMU does LOCK NEG as a cmpxchg loop and computes the flags of its compare (AF|PF|CF for
    5); the CPU's are NEG's own.  On RAM it is done here; MMIO is left to the EPT exit."""
    mode = cpu.mode()
    insn = decode(code, mode)
    linear = mem_linear(cpu, insn, mode)
    size = insn.operands[0].size
    try:
        gpas = _ram_gpas(cpu, linear, size, write=True)
    except _Fault as f:
        return _page_fault(cpu, f)
    if gpas is None:
        return step(cpu, length)
    src = cpu.read_linear(linear, size)
    res, flags = neg_flags(src, size * 8)
    cpu.write_linear(linear, size, res)
    cpu.set_reg("rflags", (cpu.reg("rflags") & ~ARITH_FLAGS) | flags)
    return _advance(cpu, length)


# ------------------------------------------------------------------ BSF/BSR r32 with a zero source

def _match_bsf32(code: bytes, mode: str) -> int | None:
    if mode != "long64":
        return None      # only 64-bit mode makes the destination's upper half visible
    p = split_prefixes(code, mode)
    i = p.op
    if code[i:i + 2] not in (b"\x0f\xbc", b"\x0f\xbd") or p.prefixes & {0x66, 0xF3} or p.rex & 8:
        return None      # F3 0F BC/BD are TZCNT/LZCNT; 0x66 and REX.W are the 16/64-bit forms
    insn = decode(code, mode)
    return insn.size if insn is not None and insn.mnemonic in ("bsf", "bsr") else None


def _run_bsf32(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    """A zero source leaves the destination unmodified on Intel silicon (all 64 bits; ZF=1); QEMU
    writes the old value back as a 32-bit result, clearing the upper half."""
    insn = decode(code, "long64")
    dest = insn.reg_name(insn.operands[0].reg)
    full = "r" + dest[1:] if dest[0] == "e" else dest[:-1]
    old = cpu.reg(full)
    rip0 = cpu.reg("rip")
    if step(cpu, length):
        return True
    if cpu.reg("rip") == rip0 + length and cpu.reg("rflags") & EFLAGS_ZF:
        cpu.set_reg(full, old)
    return False


# ------------------------------------------------------------------ SGDT/SIDT with 0x66 in 64-bit mode

def _match_sxdt66(code: bytes, mode: str) -> int | None:
    if mode != "long64":
        return None
    p = split_prefixes(code, mode)
    i = p.op
    if 0x66 not in p.prefixes or code[i:i + 2] != b"\x0f\x01" or i + 2 >= len(code):
        return None
    modrm = code[i + 2]
    if modrm >> 6 == 3 or (modrm >> 3) & 7 not in (0, 1):
        return None
    insn = decode(code, mode)
    return insn.size if insn is not None and insn.mnemonic in ("sgdt", "sidt") else None


def _run_sxdt66(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    """In 64-bit mode the operand size is fixed: 2-byte limit and 8-byte base whatever the 0x66
    prefix (QEMU applies the 16-bit operand size and keeps a 24-bit base)."""
    if cpu.cr(4) & X86_CR4_UMIP and cpu.cpl() > 0:
        return cpu._exception(Vector.GP, 0)
    insn = decode(code, "long64")
    linear = mem_linear(cpu, insn, "long64")
    base, limit = cpu.gdtr() if insn.mnemonic == "sgdt" else cpu.idtr()
    try:
        if _ram_gpas(cpu, linear, 10, write=True) is None:
            return step(cpu, length)   # MMIO: left to the EPT exit and KVM's emulator
    except _Fault as f:
        return _page_fault(cpu, f)
    cpu.write_linear(linear, 2, limit)
    cpu.write_linear(linear + 2, 8, base)
    return _advance(cpu, length)


# ------------------------------------------------------------------ x87/SSE state save/restore on MMIO

# (opcode, ModRM.reg) -> (mnemonic, bytes it touches (a bound for XSAVE*: CPUID.0xD.0 EBX of the
# default table), alignment the CPU checks, writes memory)
FXSTATE = {
    (b"\x0f\xae", 0): ("fxsave", 512, 16, True), (b"\x0f\xae", 1): ("fxrstor", 512, 16, False),
    (b"\x0f\xae", 4): ("xsave", 0x340, 64, True), (b"\x0f\xae", 5): ("xrstor", 0x340, 64, False),
    (b"\x0f\xae", 6): ("xsaveopt", 0x340, 64, True),
    (b"\xd9", 4): ("fldenv", 28, 1, False), (b"\xd9", 6): ("fnstenv", 28, 1, True),
    (b"\xdd", 4): ("frstor", 108, 1, False), (b"\xdd", 6): ("fnsave", 108, 1, True),
}


def _fxstate_spec(code: bytes, mode: str) -> tuple[tuple[str, int, int, bool], int] | None:
    p = split_prefixes(code, mode)
    i = p.op
    for op in (b"\x0f\xae", b"\xd9", b"\xdd"):
        if code[i:i + len(op)] == op and i + len(op) < len(code):
            modrm = code[i + len(op)]
            spec = FXSTATE.get((op, (modrm >> 3) & 7))
            if spec is None or modrm >> 6 == 3 or (op == b"\x0f\xae" and p.prefixes & {0x66, 0xF2, 0xF3}):
                return None    # 66/F3 0F AE are CLWB, CLFLUSHOPT, the FS/GS base and PTWRITE family
            return spec, i
    return None


def _match_fxstate(code: bytes, mode: str) -> int | None:
    if _fxstate_spec(code, mode) is None:
        return None
    insn = decode(code, mode)
    return insn.size if insn is not None else None


def _run_fxstate(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    """QEMU does these in a helper that goes on storing after a store has no memslot behind it
    (and runs the rest of the translation block): silicon stops on the first such access with an
    EPT violation, before the instruction has any effect.  On RAM it runs natively."""
    from unicorn import UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_UNMAPPED

    mode = cpu.mode()
    (name, size, align, write), _ = _fxstate_spec(code, mode)
    insn = decode(code, mode)
    linear = mem_linear(cpu, insn, mode)
    if linear is None or linear & (align - 1):
        return step(cpu, length) if linear is None else cpu._exception(Vector.GP, 0)
    addr, end = linear, linear + size
    while addr < end:
        try:
            gpa = cpu.translate(addr, write=write)
        except paging.PageFault:
            return step(cpu, length)   # the CPU's own #PF, raised by the native step
        if not cpu.gpa_is_ram(gpa):
            return cpu._ept_exit(UC_MEM_WRITE_UNMAPPED if write else UC_MEM_READ_UNMAPPED, gpa, addr)
        addr = (addr | 0xFFF) + 1
    return step(cpu, length)


# ------------------------------------------------------------------ SYSCALL, SYSRET, SYSENTER (fastsys.py)

def _two_byte(opcode: bytes) -> Callable[[bytes, str], int | None]:
    """match() of a two-byte opcode with no operands: its length when it follows the prefixes."""
    def match(code: bytes, mode: str) -> int | None:
        i = split_prefixes(code, mode).op
        return i + 2 if code[i:i + 2] == opcode else None
    return match


FIXUPS: tuple[Fixup, ...] = (
    Fixup("lock-ud", (), _match_lock_ud, _run_lock_ud,
          "QEMU 5 ignores LOCK on MOV and other non-lockable instructions; the CPU raises #UD", prefix=0xF0),
    Fixup("aligned-sse-move", (b"\x0f\x28", b"\x0f\x29", b"\x0f\x2b", b"\x0f\x6f", b"\x0f\x7f", b"\x0f\xe7",
                               b"\x0f\x38\x2a"),
          _match_aligned_sse, _run_aligned_sse,
          "QEMU 5 does not check the 16-byte alignment of MOVAPS/MOVAPD/MOVDQA/MOVNT*: #GP(0)"),
    Fixup("movbe-register", (b"\x0f\x38\xf0", b"\x0f\x38\xf1"), _match_movbe_reg, _run_ud,
          "QEMU runs MOVBE with ModRM.mod = 3; the CPU raises #UD"),
    Fixup("lock-neg", (b"\xf6", b"\xf7"), _match_lock_neg, _run_lock_neg,
          "QEMU's LOCK NEG leaves the flags of its cmpxchg loop"),
    Fixup("bsf-bsr-r32-zero", (b"\x0f\xbc", b"\x0f\xbd"), _match_bsf32, _run_bsf32,
          "QEMU zero-extends the unchanged destination of BSF/BSR r32 with a zero source"),
    Fixup("sgdt-sidt-o16-64", (b"\x0f\x01",), _match_sxdt66, _run_sxdt66,
          "QEMU honours 0x66 on SGDT/SIDT in 64-bit mode (24-bit base)"),
    Fixup("fxstate-mmio", (b"\x0f\xae", b"\xd9", b"\xdd"), _match_fxstate, _run_fxstate,
          "QEMU's FXSAVE/XSAVE/FNSAVE helpers complete past an access without a memslot"),
    Fixup("syscall", (b"\x0f\x05",), _two_byte(b"\x0f\x05"), fastsys.run_syscall,
          "unicorn's SYSCALL only calls hooks; Intel's is #UD outside 64-bit mode"),
    Fixup("sysret", (b"\x0f\x07",), _two_byte(b"\x0f\x07"), fastsys.run_sysret,
          "QEMU runs SYSRET outside 64-bit mode and to a non-canonical RCX; Intel's is #UD / #GP(0)"),
    Fixup("sysenter", (b"\x0f\x34",), _two_byte(b"\x0f\x34"), fastsys.run_sysenter,
          "unicorn's SYSENTER only calls hooks"),
)


def find(code: bytes, mode: str) -> tuple[Fixup, int] | None:
    """The fixup the instruction at the start of `code` needs, with its length, or None."""
    p = split_prefixes(code, mode)
    i = p.op
    for fx in FIXUPS:
        if any(code[i:i + len(op)] == op for op in fx.opcodes) or fx.prefix in p.prefixes:
            n = fx.match(code, mode)
            if n is not None:
                return fx, n
    return None


def apply_at_rip(cpu: "SiliconVcpu") -> bool | None:
    """The CPU is stopped before an instruction: run its fixup if it needs one.  None when it
    does not (execute it natively); else True iff the fixup ended in a VM exit."""
    try:
        code = cpu.read_linear_bytes(cpu.linear_rip(), 15)
    except (paging.PageFault, UcError):
        return None        # the native fetch raises the #PF / takes the EPT exit
    found = find(code, cpu.mode())
    if found is None:
        return None
    fx, length = found
    return fx.run(cpu, code, length)


# ------------------------------------------------------------------ faults reported by unicorn

PFERR_PRESENT, PFERR_WRITE, PFERR_FETCH = 1, 2, 16


def _written_operand_faulted(cpu: "SiliconVcpu") -> bool:
    """CR2 lies in a memory operand the instruction at RIP writes."""
    mode = cpu.mode()
    try:
        insn = decode(cpu.read_linear_bytes(cpu.linear_rip(), 15), mode)
    except (paging.PageFault, UcError):
        return False
    if insn is None:
        return False
    cr2 = cpu.cr(2)
    for op in insn.operands:
        if op.type == X86_OP_MEM and op.access & CS_AC_WRITE:
            linear = mem_linear(cpu, insn, mode)
            if linear is not None and 0 <= (cr2 - linear) % (1 << 64) < op.size:
                return True
    return False


def _canonical(addr: int) -> bool:
    top = addr >> 47
    return top in (0, 0x1FFFF)


def correct_exception(cpu: "SiliconVcpu", vector: int, error_code: int) -> tuple[int, int]:
    """A fault as unicorn reported it -> as the CPU raises it (table in the function's branches):
    * #PF on a not-present page from a read-modify-write (INC/ADD/XCHG/LOCK ... [mem]): the CPU
      reports the access as a write (W=1); QEMU loads first and reports a read.
    * In 64-bit mode a non-canonical address in a stack reference (RSP/RBP base, SS override,
      PUSH/POP/CALL/RET) is #SS(0); QEMU's page walk makes every non-canonical access #GP(0)."""
    if vector == Vector.PF and not error_code & (PFERR_PRESENT | PFERR_WRITE | PFERR_FETCH):
        return vector, error_code | (PFERR_WRITE if _written_operand_faulted(cpu) else 0)
    if vector != Vector.GP or error_code != 0 or cpu.mode() != "long64":
        return vector, error_code
    try:
        code = cpu.read_linear_bytes(cpu.linear_rip(), 15)
    except (paging.PageFault, UcError):
        return vector, error_code
    insn = decode(code, "long64")
    if insn is None:
        return vector, error_code
    for op in insn.operands:
        if op.type == X86_OP_MEM and (op.mem.base in _STACK_REGS or op.mem.segment == X86_REG_SS):
            linear = mem_linear(cpu, insn, "long64")
            if linear is not None and not _canonical(linear):
                return Vector.SS, 0
            return vector, error_code
    if insn.mnemonic in _STACK_MNEMONICS and not any(op.type == X86_OP_MEM for op in insn.operands):
        rsp = cpu.reg("rsp")
        if not _canonical(rsp) or not _canonical((rsp - 8) & 0xFFFF_FFFF_FFFF_FFFF):
            return Vector.SS, 0
    return vector, error_code

