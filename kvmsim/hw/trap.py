"""Trapping the instructions that exit when the CPU executes them, whatever put them in memory.

unicorn is the decoder of record: it alone decides where instructions start, and it tells us.  Each
translation block it generates is reported (UC_HOOK_EDGE_GENERATED, once per new block, before the
block runs; a one-shot block hook covers the very first block, which unicorn does not report).  The
block's bytes are split into instructions as the CPU split them, and every instruction that starts
like one of interest (exits.CANDIDATE: prefixes, then an exiting or silicon-handled opcode) gets a
single-address code hook whose callback is uc_emu_stop itself, so the CPU stops before it with no
Python on the way; the block is then dropped and translated again with the hooks compiled in.  At
the stop the instruction at RIP is classified in the current mode (exits.classify), and one that is
no exit there is executed natively.  Only instructions that really run are hooked: unicorn walks
every code hook at every counted instruction, so the hooks are kept to the code in use.

Code that changes is reported again: unicorn retranslates what a guest store rewrites (precise
self-modifying code) and what a new mapping puts at an address; host writes into code frames and
page-table or CR3/CR0/CR4/EFER changes drop the blocks of the pages concerned (frames are watched),
so their next translation is reported afresh.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_EDGE_GENERATED, UC_HOOK_MEM_WRITE, Uc, UcError
from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib

from kvmsim.hw import paging, quirks
from kvmsim.hw.exits import MAX_INSN, ExitingInsn, candidate_pattern, classify, cs_mode_of, insn_length, insn_starts
from kvmsim.hw.vmcs import EXIT_CONTROLS, SECONDARY_EXEC_PAUSE_LOOP_EXITING, insn_exits

_UC_EMU_STOP = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p)
PAGE = 0x1000
_TAIL = MAX_INSN - 1              # bytes of the next page an instruction starting on this one can use
_CR4_PAGING = paging.X86_CR4_PSE | paging.X86_CR4_PAE | (1 << 12)   # PSE, PAE, LA57
# Every this many VM exits the hooks of all pages but RIP's are dropped (their blocks are translated
# and reported again when they next run).  Not silicon: unicorn walks every code hook at every counted
# instruction, so a counted run costs in proportion to the stop hooks installed; this keeps them to
# the code in use.
SWEEP_EVERY_EXITS = 20_000
# ... and every this many counted instructions without one (a compute-bound stretch with no exits):
# a counted run with no stop hook left is unicorn's fastest, its count hook called inline.
SWEEP_EVERY_INSNS = 50_000_000


@dataclass(slots=True)
class _Decoded:
    """The instruction the CPU stopped at, classified for one CPU mode (None: not an exit there)."""

    insn: ExitingInsn | None
    length: int
    code: bytes
    mnemonic: str
    mode: str                                # the CPU mode it was classified in
    io: dict = field(default_factory=dict)   # decode_io result per CPU mode


@dataclass(slots=True)
class _Page:
    """A linear page blocks were reported on: the frame it mapped then and its stop hooks by address."""

    gfn: int | None
    hooks: dict[int, uc_hook_h] = field(default_factory=dict)


class InsnTrap:
    """Mixin of SiliconVcpu: stop hooks learned from the blocks unicorn translates, write watch."""

    def _trap_init(self) -> None:
        self._pages: dict[int, _Page] = {}         # linear page number -> its frame and stop hooks
        self._frames: dict[int, set[int]] = {}     # watched gfn -> linear pages mapping it
        self._frame_hooks: dict[int, int] = {}     # watched gfn -> unicorn write hook
        self._pt_frames: set[int] = set()          # gfns of the page tables known pages were walked through
        self._first_block_hook: int | None = None  # until unicorn reports blocks itself (see _on_first_block)
        self._lifted: int | None = None            # the address whose hook is lifted to run it natively
        self._exits: dict[int, _Decoded] = {}      # linear address -> classification at the last stop there
        self._lengths: dict[int, tuple[str, int]] = {}   # linear address -> (mode, length) for EPT exits
        self._maps_stale = False                   # a page-table frame was written
        self._rescan = False
        self._between = False     # the last stop came between instructions (see cpu._counted_retired)
        self._controls_key: tuple | None = None
        self._controlled: frozenset[str] = frozenset()
        self._candidate = candidate_pattern()
        self._xlate_key: tuple | None = None     # raw CR0/CR3/CR4/EFER last seen
        self._xlate_full: tuple | None = None    # their paging-relevant bits
        self._sweep_at = SWEEP_EVERY_EXITS        # the exit count at which sweep_pages runs next
        self._sweep_insns_at = SWEEP_EVERY_INSNS  # the counted instructions at which it runs next

    def _trap_power_on(self) -> None:
        self.uc.hook_add(UC_HOOK_EDGE_GENERATED, self._on_new_tb)
        # unicorn compiles a call to a hook type's *only* hook straight into the blocks it translates,
        # with no check that the hook still exists; deleting it then relies on invalidating those
        # blocks through the current page walk, which can miss, leaving a call into a freed Python
        # callback.  A block hook that never fires (a block cannot start at the top byte) keeps the
        # one-shot hook below out of line.
        self._add_stop_hook(quirks.ADDRESS_TOP, UC_HOOK_BLOCK)
        self._first_block_hook = self.uc.hook_add(UC_HOOK_BLOCK, self._on_first_block)

    def _check_controls(self) -> None:
        """Which controlled instructions exit decides the candidate pattern; rescan when that changes."""
        v = self.vmcs
        key = (v.cpu_based_vm_exec_control, v.secondary_vm_exec_control)
        if key == self._controls_key:
            return
        self._controls_key = key
        on = frozenset(m for m in EXIT_CONTROLS if insn_exits(v, m))
        if v.secondary_vm_exec_control & SECONDARY_EXEC_PAUSE_LOOP_EXITING:
            on |= {"pause"}                        # PAUSE-loop exiting watches every PAUSE
        if on != self._controlled:
            self._controlled, self._candidate = on, candidate_pattern(on)
            for n in list(self._pages):
                self._forget_page(n)
            self.uc.ctl_flush_tb()      # blocks of pages with no hooks yet may hold a newly controlled opcode

    # ------------------------------------------------------------------ hooks
    def _add_stop_hook(self, addr: int, kind: int = UC_HOOK_CODE) -> uc_hook_h:
        """A code hook on exactly `addr` whose callback is uc_emu_stop itself: the CPU stops before
        the instruction with no Python on the way (the hook's extra arguments are ignored by the
        callee under the SysV calling convention; its first one is the engine, as uc_emu_stop wants)."""
        h = uc_hook_h()
        status = uclib.uc_hook_add(self._uch, ctypes.byref(h), kind, _UC_EMU_STOP, None,
                                   ctypes.c_uint64(addr), ctypes.c_uint64(addr))
        if status:
            raise UcError(status)
        return h

    def _del_stop_hook(self, h: uc_hook_h) -> None:
        uclib.uc_hook_del(self._uch, h)

    def stop_hook_at(self, addr: int) -> uc_hook_h | None:
        page = self._pages.get(addr >> 12)
        return page.hooks.get(addr) if page is not None else None

    def _on_new_tb(self, uc: Uc, cur: object, _prev: object, _: object) -> None:
        """unicorn translated a block and is about to run it (UC_HOOK_EDGE_GENERATED)."""
        if self._first_block_hook is not None:     # unicorn reports blocks from now on
            uc.hook_del(self._first_block_hook)
            self._first_block_hook = None
        self._learn_block(cur.pc, cur.size, cur.icount)

    def _on_first_block(self, uc: Uc, addr: int, size: int, _: object) -> None:
        """unicorn reports a new block only once some block has run: the first ones come here."""
        self._learn_block(addr, size, 0)

    def _learn_block(self, pc: int, size: int, icount: int) -> None:
        """Hook the instructions of interest in the block [pc, pc + size); if any was not hooked yet,
        stop before the block runs and have it translated again with the hooks in it."""
        if size <= 0:
            return
        first, last = pc >> 12, (pc + size - 1) >> 12
        for n in range(first, last + 1):
            if n not in self._pages:
                self._note_page(n)
        try:
            code = self.read_linear_bytes(pc, size, user=False)
        except (paging.PageFault, UcError):
            return
        cands = [m.start() for m in self._candidate.finditer(code)]
        if not cands:
            return
        starts = insn_starts(code, cs_mode_of(self.mode()), icount)
        added = False
        for off in cands:
            if starts is not None and off not in starts:
                continue                      # inside another instruction: the CPU never starts there
            addr = pc + off
            page = self._pages[addr >> 12]
            if addr not in page.hooks and addr != self._lifted:
                page.hooks[addr] = self._add_stop_hook(addr)
                added = True
        if added:
            quirks.remove_cache(self.uc, pc, pc + size)
            self._rescan = self._between = True
            self.uc.emu_stop()

    # ------------------------------------------------------------------ scanning
    def _frame_of(self, linear: int) -> int | None:
        """The frame a linear page maps now (supervisor fetch rights are not checked: a scan is no access)."""
        try:
            return self.walk(linear, False, False, False) >> 12
        except paging.PageFault:
            return None

    def _note_page(self, n: int) -> None:
        """A linear page blocks come from: remember the frame it maps and watch it for writes."""
        gfn = self._frame_of(n << 12)
        self._pages[n] = _Page(gfn)
        if gfn is not None:
            self._watch(n, gfn)
        if self.cr(0) & paging.X86_CR0_PG:
            self._pt_frames |= self._walk_frames(n << 12)

    def _walk_frames(self, linear: int) -> set[int]:
        """The page-table frames the walk of `linear` reads (writes to them can remap the page)."""
        seen: set[int] = set()

        def read(gpa: int, size: int) -> int:
            seen.add(gpa >> 12)
            return self.read_phys(gpa, size)
        try:
            paging.walk(read, self.cr(0), self.cr(3), self.cr(4), self.efer(), linear)
        except paging.PageFault:
            pass
        return seen

    def _watch(self, n: int, gfn: int) -> None:
        self._frames.setdefault(gfn, set()).add(n)
        self._watch_frame(gfn)

    def _watch_frame(self, gfn: int) -> None:
        if gfn not in self._frame_hooks:
            # From 7 bytes before the frame: a store that starts there can reach into it.
            self._frame_hooks[gfn] = self.uc.hook_add(UC_HOOK_MEM_WRITE, self._on_code_write, None,
                                                      max(0, (gfn << 12) - 7), (gfn << 12) + PAGE - 1)

    def _unwatch(self, n: int, gfn: int | None) -> None:
        if gfn is None or gfn not in self._frames:
            return
        self._frames[gfn].discard(n)
        if not self._frames[gfn]:
            del self._frames[gfn]
            if gfn not in self._pt_frames:
                self.uc.hook_del(self._frame_hooks.pop(gfn))

    def _forget_page(self, n: int) -> None:
        page = self._pages.pop(n, None)
        if page is None:
            return
        for h in page.hooks.values():
            self._del_stop_hook(h)
        self._unwatch(n, page.gfn)
        for cache in (self._exits, self._lengths):
            for addr in [a for a in cache if a >> 12 == n]:
                del cache[addr]
        quirks.remove_cache(self.uc, n << 12, (n + 1) << 12)

    # ------------------------------------------------------------------ keeping scans exact
    def _on_code_write(self, uc: Uc, access: int, gpa: int, size: int, value: int, _: object) -> None:
        """A guest store into a watched frame, before it lands.  unicorn retranslates any block the
        store rewrites (precise self-modifying code) and reports the new one, so the hooks of the
        instructions the store overlaps go now (a rewritten position must not keep stopping the
        CPU) and what the stops there were classified as is forgotten."""
        if (gpa >> 12) in self._pt_frames or ((gpa + size - 1) >> 12) in self._pt_frames:
            self._maps_stale = self._rescan = self._between = True   # remapped code is re-checked at the next stop
            uc.emu_stop()
        for gfn in {gpa >> 12, (gpa + size - 1) >> 12}:
            for n in list(self._frames.get(gfn, ())):
                lin = (n << 12) | (gpa - (gfn << 12)) if gfn == gpa >> 12 else ((n << 12) - (gfn << 12) + gpa)
                self._drop_overlapped(lin, lin + size)
                self._forget_decoded(lin - _TAIL, lin + size)

    def _drop_overlapped(self, lo: int, hi: int) -> None:
        """Drop the stop hooks of instructions that overlap linear [lo, hi) (the blocks holding them
        overlap it too, so unicorn translates them again and they are reported afresh)."""
        for addr in range(lo - _TAIL, hi):
            page = self._pages.get(addr >> 12)
            h = page.hooks.get(addr) if page is not None else None
            if h is None:
                continue
            if addr < lo:
                dec = self._exits.get(addr)
                length = dec.length if dec is not None else self._insn_length_at(addr)
                if addr + length <= lo:
                    continue
            self._del_stop_hook(page.hooks.pop(addr))

    def _insn_length_at(self, addr: int) -> int:
        """The length of the instruction at linear `addr` in the current mode (MAX_INSN if unknown)."""
        try:
            code = self.read_linear_bytes(addr, MAX_INSN, user=False)
        except (paging.PageFault, UcError):
            return MAX_INSN
        return insn_length(code, cs_mode_of(self.mode())) or MAX_INSN

    def _forget_decoded(self, lo: int, hi: int) -> None:
        """Drop the classifications of the stops in linear [lo, hi)."""
        for cache in (self._exits, self._lengths):
            for addr in [a for a in range(lo, hi) if a in cache]:
                del cache[addr]

    def code_written(self, gpa: int, size: int) -> None:
        """Guest RAM changed behind the CPU's back (KVM's emulator, event delivery, a device, a new
        memslot): the scans of the pages mapping it are redone and their translations dropped."""
        if self.spt_write_protected:          # shadow paging: unicorn re-marked a protected frame read-only
            self.spt_host_wrote(gpa >> 12, (gpa + size - 1) >> 12)
        lo, hi = (gpa - _TAIL) >> 12, (gpa + size - 1) >> 12
        if any(lo <= g <= hi for g in self._pt_frames):
            self._maps_stale = True
        pages = {n + d for g, ns in self._frames.items() if lo <= g <= hi for n in ns for d in (0, 1)}
        for n in sorted(pages):
            self._forget_page(n)
        if self._maps_stale:
            self._maps_stale = False
            self._revalidate_maps()

    def invalidate_code(self, linear: int, length: int) -> None:
        """Guest code at a linear address changed under us (KVM patched an instruction)."""
        for n in range((linear - _TAIL) >> 12, ((linear + length - 1) >> 12) + 1):
            self._forget_page(n)

    def _apply_code_changes(self) -> None:
        """After a stop for a page-table write: re-check which frame each scanned page maps."""
        if self._maps_stale:
            self._maps_stale = False
            self._revalidate_maps()

    def sweep_pages(self, keep: int) -> None:
        """Forget the hooks of every page but linear page `keep` and the one after it (the CPU is
        between instructions at a VM exit, so nothing half-run depends on them)."""
        self._sweep_at = self._exit_count + SWEEP_EVERY_EXITS
        self._sweep_insns_at = self.guest_insns + SWEEP_EVERY_INSNS
        for n in [n for n in self._pages if n not in (keep, keep + 1)]:
            self._forget_page(n)

    def _check_translation(self) -> None:
        """The paging registers decide which frame each scanned page maps; re-check when they change
        (they are in the register snapshot of every exit, so the check costs one tuple compare)."""
        rc = self._rc
        key = (rc.get(0), rc.get(3), rc.get(4), self._efer)
        if key == self._xlate_key and None not in key:
            return
        full = (self.cr(0) & (paging.X86_CR0_PG | paging.X86_CR0_PE), self.cr(3), self.cr(4) & _CR4_PAGING,
                self.efer() & paging.EFER_LMA)
        if full != self._xlate_full:
            first = self._xlate_full is None
            self._xlate_full = full
            if not first:
                self._revalidate_maps()
        self._xlate_key = (rc.get(0), rc.get(3), rc.get(4), self._efer)

    def _revalidate_maps(self) -> None:
        stale = [n for n, page in self._pages.items() if self._frame_of(n << 12) != page.gfn]
        for n in stale:
            self._forget_page(n)
            self._forget_page(n - 1)

    # ------------------------------------------------------------------ classification
    def classify_at(self, here: int) -> _Decoded | None:
        """What the CPU does with the instruction at linear `here` in the current mode (cached)."""
        mode = self.mode()
        dec = self._exits.get(here)
        if dec is not None and dec.mode == mode:
            return dec
        try:
            code = self.read_linear_bytes(here, MAX_INSN, user=False)
        except (paging.PageFault, UcError):
            try:
                code = self.read_linear_bytes(here, PAGE - (here & 0xFFF), user=False)
            except (paging.PageFault, UcError):
                return None
        spec, length, mnemonic = classify(code, mode)
        dec = self._exits[here] = _Decoded(spec, length, code[:length], mnemonic, mode)
        return dec
