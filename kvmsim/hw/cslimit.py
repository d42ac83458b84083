"""Instruction fetch beyond the CS limit: #GP(0) on the silicon, nothing in unicorn.

QEMU's TCG checks no segment limit on instruction fetch, so real-mode code that runs past
IP 0xFFFF (or 16/32-bit code past a CS limit below 4 GiB) goes on into the next 64 KiB where the
CPU raises #GP(0).  While CS has such a limit outside 64-bit mode, a code hook covers the last 15
bytes below the limit and the byte after it: an instruction there that ends beyond the limit
faults before it runs.  (Jumps beyond the limit are not checked: QEMU masks 16-bit targets.)
"""

from __future__ import annotations

from unicorn import UC_HOOK_CODE, Uc

MAX_INSN = 15
_NO_WINDOW = (0, 0, "")


class CodeLimit:
    """Mixin of SiliconVcpu: the fetch-limit window while CS has a limit below 4 GiB."""

    def _cs_limit_init(self) -> None:
        self._cs_key: tuple[int, int, str] = _NO_WINDOW   # (base, limit, mode) the window is for
        self._cs_hook: int | None = None
        self._cs_window: tuple[int, int] = (0, 0)

    def _check_code_limit(self) -> None:
        """Before the guest runs: the window follows CS's base and limit (none in 64-bit mode)."""
        mode = self.mode()
        cs = self.segment("cs")
        key = (cs.base, cs.limit, mode) if mode != "long64" and cs.limit < 0xFFFF_FFFF else _NO_WINDOW
        if key == self._cs_key:
            return
        self._cs_key = key
        if self._cs_hook is not None:
            self.uc.hook_del(self._cs_hook)
            self.uc.ctl_remove_cache(*self._cs_window)
            self._cs_hook = None
        if key == _NO_WINDOW:
            return
        base, limit, _ = key
        first = base + max(limit - (MAX_INSN - 1), 0)
        last = base + limit + 1
        self._cs_window = (first, last + 1)
        self._cs_hook = self.uc.hook_add(UC_HOOK_CODE, self._cs_on_insn, None, first, last)
        self.uc.ctl_remove_cache(first, last + 1)   # translations made without the hook must go

    def _cs_on_insn(self, uc: Uc, address: int, size: int, _: object) -> None:
        base, limit, _mode = self._cs_key
        if address - base + max(size, 1) - 1 > limit:
            self._pending = ("gp", 0)
            uc.emu_stop()
