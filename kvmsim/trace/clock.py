"""Trace timestamps on virtual time: retired guest instructions, so the same scenario gives the same bytes.

Every probe event carries `insns`, the running vCPU's retired guest instructions when it was
emitted (probe.py, kvm/trace.py's trace clock).  A report shows one instruction as one
microsecond, so `trace-cmd report`'s `sec.micros` column reads as instructions since the vCPU
was created.  Everything KVM and the VMM do between two instructions takes no virtual time; the
nanoseconds keep those events apart in stream order (the first at a count is .000, the next
.001, ... capped at .999).  Nothing here is measured: for handling time see `kvmsim stat`.
"""

from __future__ import annotations

from kvmsim.probe import Event

INSN_NS = 1_000                  # one retired guest instruction = 1 us of virtual time
START_NS = 0                     # instruction 0: the vCPU's reset state


class VirtualClock:
    """`stamp(ev)` gives each event its timestamp in ns; called in stream order."""

    def __init__(self, start_ns: int = START_NS) -> None:
        self.start = start_ns
        self.now = start_ns
        self._insns = -1
        self._tie = 0

    def stamp(self, ev: Event) -> int:
        if ev.insns != self._insns:
            self._insns, self._tie = ev.insns, 0
        elif self._tie < INSN_NS - 1:
            self._tie += 1
        self.now = self.start + ev.insns * INSN_NS + self._tie
        return self.now
