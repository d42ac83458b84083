"""Finding the instructions that exit before the CPU executes them.

A block hook covers only code not scanned yet, so hot code runs hook-free; each exiting
instruction found gets a single-address code hook that stops the CPU before it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, Uc, UcError

from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib

from kvmsim.hw import paging
from kvmsim.hw.exits import EXITING_INSNS, ExitingInsn


_UC_EMU_STOP = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p)


@dataclass(slots=True)
class _Decoded:
    """An exiting instruction found by the scanner, cached by address."""

    insn: ExitingInsn
    length: int
    code: bytes
    mnemonic: str
    cs_mode: int
    io: dict = field(default_factory=dict)   # decode_io result per CPU mode
    hook: object = None                      # the unicorn code hook that stops the CPU here


class CodeScanner:
    """Mixin of SiliconVcpu: the exiting-instruction scanner and its unicorn hooks."""

    def _scan_invalid_insn(self) -> _Decoded | None:
        """The exiting instruction unicorn refused to translate at RIP, recorded like a scanned one."""
        here = self.linear_rip()
        try:
            code = self.read_linear_bytes(here, 15)
        except (paging.PageFault, UcError):
            return None
        insn = next(self._disasm(code, here), None)
        spec = EXITING_INSNS.get(insn.id) if insn is not None else None
        if spec is None:
            return None
        dec = self._exits[here] = _Decoded(spec, insn.size, bytes(insn.bytes), insn.mnemonic, self._cs_mode())
        return dec

    def _add_stop_hook(self, addr: int) -> uc_hook_h:
        """A code hook on exactly `addr` whose callback is uc_emu_stop itself: the CPU stops before
        the instruction with no Python on the way (the hook's extra arguments are ignored by the
        callee under the SysV calling convention; its first one is the engine, as uc_emu_stop wants)."""
        h = uc_hook_h()
        status = uclib.uc_hook_add(self._uch, ctypes.byref(h), UC_HOOK_CODE, _UC_EMU_STOP, None,
                                   ctypes.c_uint64(addr), ctypes.c_uint64(addr))
        if status:
            raise UcError(status)
        return h

    def _del_stop_hook(self, h: uc_hook_h) -> None:
        uclib.uc_hook_del(self._uch, h)

    def _on_new_block(self, uc: Uc, addr: int, size: int, _: object) -> None:
        """First execution of code not scanned yet: find its exiting instructions, then retranslate."""
        code = bytes(uc.mem_read(addr, size)) if size else b""
        for insn in self._disasm(code, addr):
            spec = EXITING_INSNS.get(insn.id)
            if spec is not None and insn.address not in self._exits:
                # A code hook on exactly this address stops the CPU before the instruction runs.
                hook = self._add_stop_hook(insn.address)
                self._exits[insn.address] = _Decoded(spec, insn.size, bytes(insn.bytes), insn.mnemonic,
                                                     self._cs_mode(), hook=hook)
        self._mark_scanned(addr, addr + max(size, 1))
        uc.ctl_remove_cache(addr, addr + max(size, 1))
        self._rescan = True
        uc.emu_stop()

    def _cs_mode(self) -> int:
        return {"real": CS_MODE_16, "vm86": CS_MODE_16, "prot16": CS_MODE_16,
                "long64": CS_MODE_64}.get(self.mode(), CS_MODE_32)

    def _disasm(self, code: bytes, addr: int):
        mode = self._cs_mode()
        md = self._cs.get(mode)
        if md is None:
            md = self._cs[mode] = Cs(CS_ARCH_X86, mode)
            md.detail = False
        return md.disasm(code, addr)

    def _mark_scanned(self, start: int, end: int) -> None:
        spans = sorted(self._scanned + [(start, end)])
        merged: list[tuple[int, int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            else:
                merged.append((s, e))
        self._scanned = merged
        gaps, cur = [], 0
        for s, e in merged:
            if s > cur:
                gaps.append((cur, s - 1))
            cur = e
        if cur <= (1 << 64) - 1:
            gaps.append((cur, (1 << 64) - 1))
        self._set_scan_hooks(gaps)

    def _set_scan_hooks(self, gaps: list[tuple[int, int]]) -> None:
        want = set(gaps)
        for span in list(self._scan_hooks):
            if span not in want:
                self.uc.hook_del(self._scan_hooks.pop(span))
        for span in gaps:
            if span not in self._scan_hooks:
                self._scan_hooks[span] = self.uc.hook_add(UC_HOOK_BLOCK, self._on_new_block, None, *span)

    def invalidate_code(self, linear: int, length: int) -> None:
        """Guest code changed under us (KVM patched an instruction): forget its scan and translation."""
        end = linear + length
        for addr in [a for a in self._len_cache if linear - 15 < a < end]:
            del self._len_cache[addr]
        for addr in [a for a in self._exits if linear - 15 < a < end]:
            dec = self._exits.pop(addr)
            if self.uc is not None and dec.hook:
                self._del_stop_hook(dec.hook)
        kept = []
        for s, e in self._scanned:
            if e <= linear - 15 or s >= end:
                kept.append((s, e))
        self._scanned = kept
        if self.uc is not None:
            self.uc.ctl_remove_cache(max(0, linear - 4096), end + 4096)
            self._mark_scanned(0, 0)
