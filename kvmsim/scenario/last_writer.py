"""Which guest instruction last wrote each status flag before a run stopped, and whether it left
the flag undefined (undefined_flags.py): what `kvmsim diff` may mask in the final RFLAGS.

The instruction at the final RIP has not retired; the ones before it on the straight line back
to the nearest possible entry point have, in order, on every path that reaches RIP.  So:

    1. disassemble forward from the nearest symbol below RIP; it must land on RIP exactly;
    2. cut at the last possible entry point before RIP: a symbol, the target of any direct
       branch in the image, or an address the image holds as a constant (jump tables, IDT
       gates, exception-table resume addresses); an entry inside an instruction gives up, and
       an entry at RIP leaves nothing, unless the run stopped at the HLT exit that ends there;
    3. walk back from RIP: each instruction claims the status flags it touches that no later
       one claimed; a flag claimed by an instruction that leaves it undefined is maskable.
       A call, return, unconditional jump or software interrupt ends the walk (what ran after
       it is unknown), and so does an instruction the table lacks or a shift by CL whose count
       is unknown (RCX rewritten after it).

Simplified: reads the built image (no scenario modifies its code), takes RIP as the linear
address (boot.py's segments have base 0), and does not see an exception handler that
computes its resume address at run time; every case it cannot prove ends the walk, so a flag
is masked only when the instruction that left it undefined really was the last to touch it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property

from capstone import CS_ARCH_X86, CS_GRP_BRANCH_RELATIVE, CS_GRP_CALL, CS_GRP_INT, CS_GRP_IRET, CS_GRP_RET
from capstone import CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs, CsError, CsInsn
from capstone.x86_const import X86_OP_IMM, X86_OP_REG

from kvmsim.scenario.guest_build import GuestImage
from kvmsim.scenario.undefined_flags import (CONTROL_REGISTER_MOVE, COUNT_RULES, LEAVES_STRAIGHT_LINE, STATUS,
                                             FlagEffect, flag_effect, flag_names, masked_count)

# "reset": 16-bit code linked at 0xffff0000 (its addresses are 32-bit constants).
_CS_MODE = {"real16": CS_MODE_16, "prot32": CS_MODE_32, "long64": CS_MODE_64, "reset": CS_MODE_16}
_ADDR_BYTES = {"real16": 2, "prot32": 4, "long64": 4, "reset": 4}
_STOP_GROUPS = frozenset((CS_GRP_CALL, CS_GRP_RET, CS_GRP_IRET, CS_GRP_INT))
_RCX_NAMES = frozenset(("rcx", "ecx", "cx", "cl", "ch"))
MAX_WALK = 4096   # bytes from the anchor symbol to RIP worth disassembling


@dataclass(frozen=True)
class UndefinedFlags:
    """Status flags the last instruction to touch them left undefined."""

    mask: int
    address: int
    mnemonic: str
    text: str            # "shr rax, 0x20"
    where: str = ""      # "0x10000a <_start+0xa>"

    def label(self) -> str:
        return f"rflags {flag_names(self.mask)} undefined after {self.mnemonic} (SDM)"


def mnemonic_of(insn: CsInsn) -> str:
    """capstone's mnemonic without prefixes: "lock xadd" -> "xadd", "repe cmpsb" -> "cmpsb"."""
    return insn.mnemonic.split()[-1]


def effect_of(insn: CsInsn, rcx: int | None) -> FlagEffect | None:
    """The table row for one decoded instruction; rcx is CL's value for a shift by CL, if known."""
    m = mnemonic_of(insn)
    if m == "mov" and any(op.type == X86_OP_REG and insn.reg_name(op.reg)[:2] in ("cr", "dr")
                          for op in insn.operands):
        return CONTROL_REGISTER_MOVE
    if m not in COUNT_RULES:
        return flag_effect(m)
    ops = insn.operands
    bits = ops[0].size * 8
    src = ops[-1]
    if len(ops) == 1:
        count = 1
    elif src.type == X86_OP_IMM:
        count = src.imm
    elif src.type == X86_OP_REG and insn.reg_name(src.reg) == "cl" and rcx is not None:
        count = rcx & 0xFF
    else:
        return None
    return flag_effect(m, masked_count(count, bits), bits)


class FlagWriters:
    """The guest image's code as far as the walk needs it: instructions, entry points."""

    def __init__(self, image: GuestImage) -> None:
        self.image = image
        self._cs = Cs(CS_ARCH_X86, _CS_MODE[image.mode])
        self._cs.detail = True

    @cached_property
    def _symbols(self) -> list[int]:
        lo, hi = self.image.load_addr, self.image.load_addr + len(self.image.image)
        return sorted({a for a in self.image.symbols.values() if lo <= a < hi})

    @cached_property
    def _symbol_set(self) -> frozenset[int]:
        return frozenset(self._symbols)

    @cached_property
    def branch_targets(self) -> frozenset[int]:
        """Targets of every direct jump, call and loop, decoding each symbol's span (data included:
        a spurious target only shortens walks)."""
        img, base = self.image.image, self.image.load_addr
        cs = Cs(CS_ARCH_X86, _CS_MODE[self.image.mode])
        cs.detail, cs.skipdata = True, True
        targets = set()
        starts = self._symbols or [base]
        for start, end in zip(starts, [*starts[1:], base + len(img)]):
            for i in cs.disasm(img[start - base:end - base], start):
                if i.id == 0:
                    continue   # bytes capstone skipped as data (no detail)
                if CS_GRP_BRANCH_RELATIVE in i.groups and i.operands and i.operands[0].type == X86_OP_IMM:
                    targets.add(i.operands[0].imm)
        return frozenset(targets)

    @cached_property
    def address_constants(self) -> frozenset[int]:
        """Addresses inside the image that the image holds as a little-endian word at any offset
        (2 bytes in real16, else 4; a 64-bit constant below 4 GiB starts with its low 4)."""
        img, base = self.image.image, self.image.load_addr
        n = _ADDR_BYTES[self.image.mode]
        words = {int.from_bytes(img[k:k + n], "little") for k in range(len(img) - n + 1)}
        return frozenset(a for a in words if base <= a <= base + len(img))

    def _is_entry(self, addr: int) -> bool:
        return addr in self.branch_targets or addr in self._symbol_set or addr in self.address_constants

    def straight_line(self, rip: int, after_hlt: bool = False) -> list[CsInsn] | None:
        """Steps 1-2: the instructions that retired, in order, on every path to RIP; None if unknown.

        after_hlt: the run stopped at the HLT exit of the instruction that ends at RIP (KVM skipped
        it), so control came through that HLT even if RIP itself is an entry point.
        """
        base, img = self.image.load_addr, self.image.image
        k = bisect.bisect_left(self._symbols, rip) - 1   # the nearest symbol below RIP
        if k < 0 or not base <= rip <= base + len(img) or rip - self._symbols[k] > MAX_WALK:
            return None
        anchor = self._symbols[k]
        insns: list[CsInsn] = []
        try:
            for i in self._cs.disasm(img[anchor - base:rip - base], anchor):
                insns.append(i)
        except CsError:
            return None
        end = insns[-1].address + insns[-1].size if insns else anchor
        if end != rip:
            return None   # capstone stopped early, or RIP is inside an instruction
        start = 0
        for n, i in enumerate(insns):
            inside = range(i.address + 1, i.address + i.size)
            if any(self._is_entry(a) for a in inside):
                return None   # control may enter mid-instruction: the decode is not the path
            if n and self._is_entry(i.address):
                start = n
        through_hlt = after_hlt and bool(insns) and mnemonic_of(insns[-1]) == "hlt"
        if self._is_entry(rip) and not through_hlt:
            return []
        return insns[start:]

    def passes_flags(self, rip: int, later_rip: int | None) -> bool:
        """The one instruction at RIP ends at later_rip and touches no status flag (an OUT one side
        retired before the exit, the other not yet)."""
        off = rip - self.image.load_addr
        if later_rip is None or not 0 <= off < len(self.image.image):
            return False
        try:
            i = next(self._cs.disasm(self.image.image[off:off + 15], rip, 1), None)
            eff = effect_of(i, None) if i is not None else None
        except CsError:
            return False
        return eff is not None and i.address + i.size == later_rip and not eff.touched

    def undefined_at(self, rip: int, rcx: int | None, after_hlt: bool = False) -> list[UndefinedFlags]:
        """Step 3: per instruction, the status flags it was last to touch and left undefined."""
        insns = self.straight_line(rip, after_hlt)
        if not insns:
            return []
        pending, found, rcx_known = STATUS, {}, rcx
        for i in reversed(insns):
            if mnemonic_of(i) in LEAVES_STRAIGHT_LINE or _STOP_GROUPS & set(i.groups):
                break
            try:
                if _RCX_NAMES & {i.reg_name(r) for r in i.regs_access()[1]}:
                    rcx_known = None   # CL before this instruction is not the final one
                eff = effect_of(i, rcx_known)
            except CsError:
                eff = None   # capstone has no operand detail for it: no claim
            if eff is None:
                break
            if undef := pending & eff.undefined:
                found[i.address] = UndefinedFlags(undef, i.address, mnemonic_of(i), f"{i.mnemonic} {i.op_str}".strip(),
                                                  f"{i.address:#x} <{self.image.symbolize(i.address)}>")
            pending &= ~eff.touched
            if not pending:
                break
        return sorted(found.values(), key=lambda u: u.address)
