"""Page-modification logging (SDM 29.3.6): with "enable PML" set, each guest write that sets an EPT
entry's dirty flag (0 → 1) logs the page's GPA in the 512-entry PML buffer, from GUEST_PML_INDEX
511 downwards; a write that needs an entry while the index has left 0-511 is a PML-full VM exit.

The EPT dirty flags exist only for the frames KVM cleared them on (the memslots that log dirty
pages; every other frame is dirty already and never logs).  A write hook over those memslots
plays the CPU's part.  Simplified: the PML-full exit comes after the writing instruction (at the
end of its translation block) instead of before it, and the GPA that did not fit is logged at the
next VM entry, into the buffer KVM has emptied; KVM's dirty bitmap ends up the same.
"""

from __future__ import annotations

from unicorn import UC_HOOK_MEM_WRITE, Uc

from kvmsim.hw.vmcs import SECONDARY_EXEC_ENABLE_PML

PML_ENTITY_NUM = 512


class PageModLog:
    """Mixin of SiliconVcpu: the EPT dirty flags of logged frames and the PML buffer."""

    def _pml_init(self) -> None:
        self.pml_buffer: list[int] = [0] * PML_ENTITY_NUM     # the 4 KiB page at PML_ADDRESS
        self._ept_clean: set[int] = set()                    # gfns whose EPT dirty flag is 0
        self._pml_overflow: list[int] = []                   # GPAs that met a full buffer
        self._pml_hooks: dict[tuple[int, int], int] = {}     # (gpa, size) -> write hook
        self._pml_ranges: list[tuple[int, int]] = []

    def _pml_power_on(self) -> None:
        self._pml_hooks.clear()
        self.pml_watch(list(self._pml_ranges))

    def pml_watch(self, ranges: list[tuple[int, int]]) -> None:
        """The GPA ranges (the dirty-logging memslots) whose frames can have clean EPT entries."""
        self._pml_ranges = ranges
        if self.uc is None:
            return
        for key in [k for k in self._pml_hooks if k not in ranges]:
            self.uc.hook_del(self._pml_hooks.pop(key))
        for gpa, size in ranges:
            if (gpa, size) not in self._pml_hooks:
                self._pml_hooks[(gpa, size)] = self.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_logged_write, None,
                                                                gpa, gpa + size - 1)

    def ept_clear_dirty(self, gfns: set[int] | range) -> None:
        """KVM clears the dirty flags of these frames' EPT entries (their next write logs again)."""
        self._ept_clean.update(gfns)

    def _pml_log(self, gpa: int) -> bool:
        """The CPU sets a dirty flag: one entry at GUEST_PML_INDEX; False when the buffer is full."""
        v = self.vmcs
        if not 0 <= v.guest_pml_index < PML_ENTITY_NUM:
            return False
        self.pml_buffer[v.guest_pml_index] = gpa & ~0xFFF
        v.guest_pml_index = (v.guest_pml_index - 1) & 0xFFFF
        return True

    def _on_logged_write(self, uc: Uc, access: int, addr: int, size: int, value: int, _: object) -> None:
        if not self.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_ENABLE_PML:
            return
        for gfn in {addr >> 12, (addr + size - 1) >> 12}:
            if gfn not in self._ept_clean:
                continue
            self._ept_clean.discard(gfn)
            if not self._pml_log(gfn << 12):
                self._pml_overflow.append(gfn << 12)
                if self._pending is None:
                    self._pending = ("pml_full",)
                    self._between = True
                    uc.emu_stop()

    def pml_take(self) -> list[int]:
        """What vmx_flush_pml_buffer reads: the logged GPAs (index+1 .. 511), then the index reset."""
        v = self.vmcs
        first = 0 if v.guest_pml_index >= PML_ENTITY_NUM else v.guest_pml_index + 1
        taken = self.pml_buffer[first:PML_ENTITY_NUM]
        v.guest_pml_index = PML_ENTITY_NUM - 1
        return taken

    def _pml_entry(self) -> None:
        """At VM entry: GPAs that met a full buffer go into the emptied one."""
        while self._pml_overflow and self._pml_log(self._pml_overflow[0]):
            self._pml_overflow.pop(0)
