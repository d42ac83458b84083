"""Census of the emulator tables against emulate.c's (what `kvmsim emulator-coverage` prints).

For each table: how many entries our model has non-empty (not `N`), next to the count
of non-empty entries in the kernel's table, and how many of ours can actually execute
(an executor, a fastop, or a case of the built-in switch; the rest end in
cannot_emulate or exist only for nested intercepts, as upstream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .emulate import ONE_BYTE_SWITCH, TWO_BYTE_SWITCH
from .flags import GroupMask, NotImpl, Undefined
from .opcode import Opcode
from .tables import opcode_map_0f_38, opcode_table, twobyte_table

# Non-empty entries per table in linux-next ~v6.18 arch/x86/kvm/emulate.c, counted from
# the source (reference/kvm-exit-handling.md §9.4).
KERNEL_COUNTS = {"opcode_table": 234, "twobyte_table": 119, "opcode_map_0f_38": 2}


@dataclass(frozen=True)
class TableCensus:
    table: str
    modelled: int      # entries non-empty in our table
    kernel: int        # entries non-empty in the kernel's table
    executable: int    # of ours: at least one form reaches an executor or the switch


def _leaves(op: Opcode) -> list[Opcode]:
    """All final entries an opcode can resolve to through group mechanisms."""
    if not op.flags & GroupMask:
        return [op]
    u = op.u
    if isinstance(u, tuple):
        subs: Sequence[Opcode] = u
    elif hasattr(u, "mod012") and hasattr(u, "mod3"):
        subs = [*(u.mod012 if isinstance(u.mod012, tuple) else [u.mod012]),
                *(u.mod3 if isinstance(u.mod3, tuple) else [u.mod3])]
    elif hasattr(u, "pfx_no"):
        subs = [u.pfx_no, u.pfx_66, u.pfx_f2, u.pfx_f3]
    elif hasattr(u, "high"):
        subs = [*u.op, *u.high]
    else:
        subs = [u.mode32, u.mode64]
    return [leaf for s in subs for leaf in _leaves(s)]


def _executable(op: Opcode, b: int, switch: dict | None) -> bool:
    for leaf in _leaves(op):
        if leaf.flags & (NotImpl | Undefined):
            continue
        if callable(leaf.u) or switch is None or b in switch:
            return True
    return False


def _census(name: str, table: Sequence[Opcode], switch: dict | None) -> TableCensus:
    present = [(b, op) for b, op in enumerate(table) if not op.flags & NotImpl]
    execs = sum(1 for b, op in present if _executable(op, b, switch))
    return TableCensus(name, len(present), KERNEL_COUNTS[name], execs)


def emulator_coverage() -> list[TableCensus]:
    """Per table: (entries modelled, entries non-empty in the kernel, executable)."""
    return [_census("opcode_table", opcode_table, ONE_BYTE_SWITCH),
            _census("twobyte_table", twobyte_table, TWO_BYTE_SWITCH),
            _census("opcode_map_0f_38", opcode_map_0f_38, None)]


def format_coverage() -> str:
    lines = [f"{'table':<18} {'modelled':>8} {'kernel':>7} {'executable':>10}"]
    for c in emulator_coverage():
        lines.append(f"{c.table:<18} {c.modelled:>8} {c.kernel:>7} {c.executable:>10}")
    total = emulator_coverage()
    lines.append(f"{'total':<18} {sum(c.modelled for c in total):>8} "
                 f"{sum(c.kernel for c in total):>7} {sum(c.executable for c in total):>10}")
    return "\n".join(lines)
