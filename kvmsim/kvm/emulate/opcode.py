"""Model of emulate.c's struct opcode, its sub-tables and the table-building macros.

`Opcode.u` is the kernel's union: an executor, a fastop, or a sub-table, told apart by
the GroupMask/Fastop bits of `flags`, exactly as in C. `name` is ours (for the census).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .flags import (ByteOp, CheckPerm, DstAcc, DstMem, DstReg, Escape, Fastop, Group,
                    GroupDual, InstrDual, Intercept, Lock, ModeDual, ModRM, NotImpl,
                    Prefix, RMExt, SrcImm, SrcMem, SrcReg)
from .ops import X86Intercept

Exec = Callable[[Any], int]


@dataclass(frozen=True, slots=True)
class Opcode:
    """struct opcode: flags, optional intercept, the union `u`, optional check_perm."""

    flags: int
    u: Any = None
    intercept: int = 0
    check_perm: Exec | None = None
    # Derived, not part of struct opcode: `u` when it is an executor/fastop, else None
    # (what x86_decode_insn stores in ctxt->execute), computed once per table entry.
    execute: Exec | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "execute", self.u if callable(self.u) else None)

    @property
    def implemented(self) -> bool:
        return not self.flags & NotImpl


@dataclass(frozen=True, slots=True)
class GroupDualTable:
    """struct group_dual: mod012[8] for memory forms, mod3[8] for register forms."""

    mod012: Sequence[Opcode]
    mod3: Sequence[Opcode]


@dataclass(frozen=True, slots=True)
class GPrefixTable:
    """struct gprefix: chosen by no prefix / 66 / F2 / F3."""

    pfx_no: Opcode
    pfx_66: Opcode
    pfx_f2: Opcode
    pfx_f3: Opcode


@dataclass(frozen=True, slots=True)
class EscapeTable:
    """struct escape: x87 op[8] by ModRM.reg (memory forms), high[64] by modrm - 0xc0."""

    op: Sequence[Opcode]
    high: Sequence[Opcode]


@dataclass(frozen=True, slots=True)
class InstrDualTable:
    """struct instr_dual: memory form vs register form."""

    mod012: Opcode
    mod3: Opcode


@dataclass(frozen=True, slots=True)
class ModeDualTable:
    """struct mode_dual: outside vs inside 64-bit mode."""

    mode32: Opcode
    mode64: Opcode


def _icpt(name: str) -> int:
    return int(X86Intercept["in_" if name == "in" else name])


# --- the table macros (names as in emulate.c) --------------------------------------------
def D(f: int) -> Opcode:
    """Flags only; the built-in switch of x86_emulate_insn executes it."""
    return Opcode(f)


N = Opcode(NotImpl)


def DI(f: int, icpt: str) -> Opcode:
    return Opcode(f | Intercept, intercept=_icpt(icpt))


def DIP(f: int, icpt: str, perm: Exec) -> Opcode:
    return Opcode(f | Intercept | CheckPerm, intercept=_icpt(icpt), check_perm=perm)


def I(f: int, e: Exec) -> Opcode:  # noqa: E743 (kernel macro name)
    return Opcode(f, u=e)


def F(f: int, e: Exec) -> Opcode:
    """A fastop: our Python ALU function stands in for the asm stub family."""
    return Opcode(f | Fastop, u=e)


def II(f: int, e: Exec, icpt: str) -> Opcode:
    return Opcode(f | Intercept, u=e, intercept=_icpt(icpt))


def IIP(f: int, e: Exec, icpt: str, perm: Exec) -> Opcode:
    return Opcode(f | Intercept | CheckPerm, u=e, intercept=_icpt(icpt), check_perm=perm)


def G(f: int, g: Sequence[Opcode]) -> Opcode:
    return Opcode(f | Group | ModRM, u=tuple(g))


def GD(f: int, g: GroupDualTable) -> Opcode:
    return Opcode(f | GroupDual | ModRM, u=g)


def ID(f: int, i: InstrDualTable) -> Opcode:
    return Opcode(f | InstrDual | ModRM, u=i)


def MD(f: int, m: ModeDualTable) -> Opcode:
    return Opcode(f | ModeDual, u=m)


def E(f: int, e: EscapeTable) -> Opcode:
    return Opcode(f | Escape | ModRM, u=e)


def EXT(f: int, e: Sequence[Opcode]) -> Opcode:
    return Opcode(f | RMExt, u=tuple(e))


def GP(f: int, g: GPrefixTable) -> Opcode:
    return Opcode(f | Prefix, u=g)


def D2bv(f: int) -> list[Opcode]:
    return [D(f | ByteOp), D(f)]


def I2bv(f: int, e: Exec) -> list[Opcode]:
    """Byte form, then word/dword/qword form."""
    return [I(f | ByteOp, e), I(f, e)]


def F2bv(f: int, e: Exec) -> list[Opcode]:
    return [F(f | ByteOp, e), F(f, e)]


def I2bvIP(f: int, e: Exec, icpt: str, perm: Exec) -> list[Opcode]:
    return [IIP(f | ByteOp, e, icpt, perm), IIP(f, e, icpt, perm)]


def F6ALU(f: int, e: Exec) -> list[Opcode]:
    """The six classic ALU encodings: r/m,reg; reg,r/m (no LOCK); acc,imm (no LOCK)."""
    return (F2bv(f | DstMem | SrcReg | ModRM, e)
            + F2bv((f | DstReg | SrcMem | ModRM) & ~Lock, e)
            + F2bv((f & ~Lock) | DstAcc | SrcImm, e))


def X(n: int, op: Opcode) -> list[Opcode]:
    """X2 ... X16: n copies."""
    return [op] * n
