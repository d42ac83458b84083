"""Debugger stops inside guest execution: breakpoints at guest linear addresses and single steps.

They use the mechanism exits use (trap.py): a breakpoint is a single-address code hook whose
callback is uc_emu_stop itself, so the CPU stops before the instruction with no Python on the
way; a single step runs the engine with an instruction count of 1, as `_step_native` does.
Nothing is set while no debugger asks: the run loop then tests one boolean (`_dbg_on`) where the
CPU stopped anyway, so an attached debugger with no breakpoints costs nothing here.

The debugger's callback (`debug_stop`) is called on the vCPU thread at an instruction boundary,
before the instruction at `here` runs, and does not return until the user resumes (a stop is the
callback not returning).  The architectural outcome is unchanged: the guest is only paused.
"""

from __future__ import annotations

from typing import Callable

from kvmsim.hw import quirks

DebugStop = Callable[[str, int], None]   # (why: "breakpoint" | "step" | "interrupt", linear RIP)


class DebugTrap:
    """Mixin of SiliconVcpu: debugger breakpoints, single step, interrupt."""

    def _dbg_init(self) -> None:
        self.debug_stop: DebugStop | None = None
        self._dbg_addrs: set[int] = set()          # linear addresses with a debugger breakpoint
        self._dbg_hooks: dict[int, object] = {}    # ... and their unicorn hooks (live engine only)
        self._dbg_on = False                       # any of the below: the run loop looks
        self._dbg_step = False                     # stop at the next instruction boundary
        self._dbg_stepped = False                  # an instruction completed since the step began
        self._dbg_mark = 0                         # _exit_count when the step began
        self._dbg_from = -1                        # ... and the linear RIP
        self._dbg_interrupt = False                # Ctrl-C: stop where the CPU is
        self._dbg_reported: int | None = None      # the breakpoint just reported (step over it next)

    def _dbg_update(self) -> None:
        self._dbg_on = (bool(self._dbg_addrs) or self._dbg_step or self._dbg_interrupt
                        or self._dbg_reported is not None)

    # ------------------------------------------------------------------ the debugger's side
    def add_debug_breakpoint(self, linear: int) -> None:
        """Stop before the instruction at guest linear address `linear` whenever the CPU reaches it."""
        self._dbg_addrs.add(linear)
        self._dbg_arm(linear)
        self._dbg_update()

    def remove_debug_breakpoint(self, linear: int) -> None:
        self._dbg_addrs.discard(linear)
        h = self._dbg_hooks.pop(linear, None)
        if h is not None and self.uc is not None:
            self._del_stop_hook(h)
            quirks.remove_cache(self.uc, linear, linear + 1)
        self._dbg_update()

    def debug_breakpoints(self) -> frozenset[int]:
        return frozenset(self._dbg_addrs)

    def debug_single_step(self) -> None:
        """Stop at the next instruction boundary after one guest instruction completes (natively,
        or by KVM after its exit)."""
        self._dbg_step, self._dbg_stepped, self._dbg_mark = True, False, self._exit_count
        self._dbg_from = self.linear_rip()
        self._dbg_update()

    def debug_cancel_step(self) -> None:
        self._dbg_step = False
        self._dbg_update()

    def debug_interrupt(self) -> None:
        """From any thread: stop the running guest at the current instruction boundary."""
        self._dbg_interrupt = True
        self._dbg_on = True
        if self.uc is not None:
            self.uc.emu_stop()

    # ------------------------------------------------------------------ the run loop's side
    def _dbg_arm(self, linear: int) -> None:
        if self.uc is not None and linear not in self._dbg_hooks:
            self._dbg_hooks[linear] = self._add_stop_hook(linear)
            self.uc.ctl_remove_cache(linear, linear + 1)   # a translation made before has no hook

    def _dbg_count(self) -> int:
        """The instruction count of the next engine run: 1 while single-stepping, else 0 (none)."""
        return 1 if self._dbg_step else 0

    def _dbg_progress(self, retired: int) -> None:
        if retired > 0 and self._dbg_step:
            self._dbg_stepped = True

    def _dbg_boundary(self, here: int) -> bool:
        """At an instruction boundary (the CPU stopped before `here`): report a stop the debugger
        wants.  True: reported (the caller re-enters; registers may have changed)."""
        why = None
        if self._dbg_interrupt:
            self._dbg_interrupt = False
            why = "interrupt"
        elif self._dbg_step and (self._dbg_stepped or self._exit_count != self._dbg_mark or here != self._dbg_from):
            # (RIP moved: an engine run stopped by a block hook retires its instructions uncounted)
            self._dbg_step = False
            why = "step"
        elif here in self._dbg_addrs and self._dbg_reported != here:
            why = "breakpoint"
        self._dbg_update()
        if why is None:
            return False
        self._dbg_reported = here if here in self._dbg_addrs else None
        self._dbg_update()
        if self.debug_stop is not None:
            self.debug_stop(why, here)
        self.flush_regs()                  # what the user set reaches the CPU; then reread it all
        self._rc.clear()
        self._mode_stale = True
        rip = self.linear_rip()
        if rip != here:
            self._dbg_reported = None      # the user moved RIP: a breakpoint there stops
        self._dbg_update()
        return True

    def _dbg_step_over(self, here: int) -> bool:
        """The CPU stopped only for a breakpoint already reported at `here`: run the instruction
        natively with the hook lifted (an exiting instruction never gets here: trap.py's hook at
        the same address classifies it first).  True on an exit."""
        self._dbg_reported = None
        self._dbg_update()
        return self._step_native(here)

    def _dbg_lift(self, addr: int) -> object | None:
        h = self._dbg_hooks.pop(addr, None)
        if h is not None:
            self._del_stop_hook(h)
        return h

    def _dbg_power_on(self) -> None:
        self._dbg_hooks.clear()
        for a in self._dbg_addrs:
            self._dbg_arm(a)
