"""Task switches in VMX non-root mode: a CALL/JMP to a TSS or task gate, an IRET with NT set, or an
event through an IDT task gate always VM-exits (TASK_SWITCH) once the CPU has made the checks that
come before the switch itself (SDM vol. 3 7.3, "Task switching"; 26.4.2).  Unicorn would do the
switch itself, so the silicon stops these instructions and decides here.

Each decision is ("native",) — not a task switch, the CPU runs the instruction —, ("fault", vector,
error code), or ("exit", TSS selector).
"""

from __future__ import annotations

from typing import Protocol

from kvmsim.hw.event import DeliveryFault
from kvmsim.hw.vmcs import Vector

TASK_SWITCH_CALL, TASK_SWITCH_IRET, TASK_SWITCH_JMP, TASK_SWITCH_GATE = 0, 1, 2, 3
TSS16_AVAIL, TSS16_BUSY, TASK_GATE, TSS32_AVAIL, TSS32_BUSY = 1, 3, 5, 9, 11
EFLAGS_NT = 1 << 14
Decision = tuple


class TaskCpu(Protocol):
    def mode(self) -> str: ...
    def cpl(self) -> int: ...
    def gdtr(self) -> tuple[int, int]: ...
    def read_linear(self, addr: int, size: int, user: bool | None = None) -> int: ...
    def segment(self, name: str): ...   # noqa: ANN201 (KvmSegment)


def switches_tasks(mode: str) -> bool:
    """Hardware task switching exists in protected mode only (not real, vm86 or IA-32e mode)."""
    return mode in ("prot32", "prot16")


def _descriptor(cpu: TaskCpu, selector: int) -> int | None:
    """The 8-byte GDT/LDT entry of `selector`, None past the table's limit."""
    if selector & 4:
        ldt = cpu.segment("ldt")
        if ldt.unusable:
            return None
        base, limit = ldt.base, ldt.limit
    else:
        base, limit = cpu.gdtr()
    if (selector & ~7) + 7 > limit:
        return None
    return cpu.read_linear(base + (selector & ~7), 8, user=False)


def _tss_checks(cpu: TaskCpu, tss_sel: int, want_busy: bool, bad_vector: int) -> Decision:
    """The new TSS: in the GDT, a TSS descriptor, available (busy for IRET), present."""
    err = tss_sel & 0xFFFC
    desc = _descriptor(cpu, tss_sel) if not tss_sel & 4 else None
    if desc is None or (desc >> 44) & 1:
        return ("fault", bad_vector, err)
    dtype = (desc >> 40) & 0xF
    if dtype not in ((TSS16_BUSY, TSS32_BUSY) if want_busy else (TSS16_AVAIL, TSS32_AVAIL)):
        return ("fault", bad_vector, err)
    if not (desc >> 47) & 1:
        return ("fault", Vector.NP, err)
    return ("exit", tss_sel)


def far_transfer(cpu: TaskCpu, selector: int) -> Decision:
    """CALL/JMP far to `selector`: a task switch when it names a TSS or a task gate (SDM CALL/JMP
    "Operation"); a code segment or call gate is not (the CPU runs the transfer itself)."""
    try:
        if not selector & ~3:
            return ("native",)
        desc = _descriptor(cpu, selector)
        if desc is None or (desc >> 44) & 1:                      # past the limit (#GP) or not a system segment
            return ("native",)
        dtype, dpl, present = (desc >> 40) & 0xF, (desc >> 45) & 3, (desc >> 47) & 1
        if dtype not in (TSS16_AVAIL, TSS16_BUSY, TASK_GATE, TSS32_AVAIL, TSS32_BUSY):
            return ("native",)
        err = selector & 0xFFFC
        if dpl < cpu.cpl() or dpl < (selector & 3):
            return ("fault", Vector.GP, err)
        if dtype in (TSS16_BUSY, TSS32_BUSY):
            return ("fault", Vector.GP, err)
        if not present:
            return ("fault", Vector.NP, err)
        if dtype != TASK_GATE:
            return ("exit", selector)
        return _tss_checks(cpu, (desc >> 16) & 0xFFFF, False, Vector.GP)
    except DeliveryFault as f:
        return ("fault", f.vector, f.error_code)


def iret_task_return(cpu: TaskCpu) -> Decision:
    """IRET with EFLAGS.NT: back to the task in the current TSS's back link (a busy TSS)."""
    try:
        link = cpu.read_linear(cpu.segment("tr").base, 2, user=False)
        return _tss_checks(cpu, link, True, Vector.TS)
    except DeliveryFault as f:
        return ("fault", f.vector, f.error_code)


def task_gate_tss(cpu: TaskCpu, gate: int) -> int:
    """The TSS selector of an IDT task gate."""
    return (gate >> 16) & 0xFFFF
