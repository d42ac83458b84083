"""Writes through a read-only data segment: #GP(0) on the silicon, nothing in unicorn.

QEMU's TCG makes no segment type check on data accesses.  While a read-only data descriptor sits
in DS/ES/FS/GS in protected or compatibility mode (64-bit mode ignores data segment types), the
CPU checks each instruction before it runs (a code hook on every instruction, so slow, but only
then) and raises #GP(0) for one that writes memory through such a segment.  Segment loads stop
the CPU (exits.py candidates), so the check starts with the first instruction after the load.
"""

from __future__ import annotations

from capstone import CS_AC_WRITE, CS_ARCH_X86, Cs
from capstone.x86_const import X86_OP_MEM
from unicorn import UC_HOOK_CODE, Uc, UcError

from kvmsim.hw.exits import cs_mode_of

_DATA_SEGS = ("ds", "es", "fs", "gs")
_STACK_BASES = frozenset({"esp", "ebp", "sp", "bp"})


class ReadOnlySegments:
    """Mixin of SiliconVcpu: the per-instruction write check while a read-only segment is loaded."""

    def _ro_init(self) -> None:
        self._ro_segs: frozenset[str] = frozenset()
        self._ro_hook: int | None = None
        self._ro_writes: dict[tuple[int, bytes, str], frozenset[str]] = {}   # segments an insn writes through
        self._ro_cs: dict[int, Cs] = {}

    def _check_ro_segments(self) -> None:
        """Before the guest runs: arm the check iff a data segment register is read-only now."""
        mode = self.mode()
        ro: frozenset[str] = frozenset()
        if mode in ("prot32", "prot16", "compat"):
            ro = frozenset(n for n in _DATA_SEGS if _read_only_data(self.segment(n)))
        if ro == self._ro_segs:
            return
        self._ro_segs = ro
        if ro and self._ro_hook is None:
            self._ro_hook = self.uc.hook_add(UC_HOOK_CODE, self._ro_on_insn, None, 1, 0)
            self.uc.ctl_flush_tb()             # translations made without the hook must go
        elif not ro and self._ro_hook is not None:
            self.uc.hook_del(self._ro_hook)
            self._ro_hook = None
            self.uc.ctl_flush_tb()

    def _ro_on_insn(self, uc: Uc, address: int, size: int, _: object) -> None:
        try:
            code = bytes(uc.mem_read(address, size)) if size else b""
        except UcError:
            return
        mode = self.mode()
        key = (address, code, mode)
        segs = self._ro_writes.get(key)
        if segs is None:
            segs = self._ro_writes[key] = self._written_segments(code, mode)
        if segs & self._ro_segs:
            self._pending = ("gp", 0)
            uc.emu_stop()

    def _written_segments(self, code: bytes, mode: str) -> frozenset[str]:
        m = cs_mode_of(mode)
        md = self._ro_cs.get(m)
        if md is None:
            md = self._ro_cs[m] = Cs(CS_ARCH_X86, m)
            md.detail = True
        insn = next(md.disasm(code, 0, 1), None)
        if insn is None:
            return frozenset()
        out = set()
        for op in insn.operands:
            if op.type == X86_OP_MEM and op.access & CS_AC_WRITE:
                if op.mem.segment:
                    out.add(insn.reg_name(op.mem.segment))
                elif op.mem.base and insn.reg_name(op.mem.base) in _STACK_BASES:
                    out.add("ss")
                else:
                    out.add("ds")
        return frozenset(out)


def _read_only_data(seg) -> bool:
    """A usable, present data segment without the writable bit (type 0, 1, 4, 5)."""
    return bool(seg.s and seg.present and not seg.unusable and not seg.type & 8 and not seg.type & 2)
