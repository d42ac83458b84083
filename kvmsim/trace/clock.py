"""A deterministic virtual clock for trace timestamps: same scenario, same bytes.

Nothing here is measured.  Each probe event advances the clock by a fixed cost by kind, and
the gaps no probe sees (the guest running between kvm_entry and kvm_exit, the VMM between
kvm_userspace_exit and the next KVM_RUN) by fixed amounts, so timestamps order events and
space them plausibly; for measured handling time see `kvmsim stat`.
"""

from __future__ import annotations

from kvmsim.probe import Event

BOOT_NS = 1_000_000_000          # the trace starts 1 s after "boot", as a host trace never starts at 0
COST_NS = {"call": 50, "ret": 10, "tp": 20}
GUEST_NS = 1_000                 # kvm_entry → kvm_exit: time in the guest
USERSPACE_NS = 2_000             # kvm_userspace_exit → next KVM_RUN: time in the VMM


class VirtualClock:
    """`stamp(ev)` gives each event its timestamp in ns, in stream order."""

    def __init__(self, start_ns: int = BOOT_NS) -> None:
        self.now = start_ns
        self._gap = 0

    def stamp(self, ev: Event) -> int:
        self.now += self._gap + COST_NS.get(ev.kind, 0)
        self._gap = 0
        if ev.kind == "tp":
            if ev.name == "kvm_entry":
                self._gap = GUEST_NS
            elif ev.name == "kvm_userspace_exit":
                self._gap = USERSPACE_NS
        return self.now
