"""probe.py across subscribe/unsubscribe cycles: each traced run sees every call, and between runs
every modelled function is the plain one again (tracing off costs nothing)."""

from __future__ import annotations

import sys
from types import FunctionType
from pathlib import Path

from kvmsim import probe
from kvmsim.scenario.loader import load_scenario
from kvmsim.trace.capture import capture_sim
from kvmsim.trace.commands import modelled_functions

REPO = Path(__file__).resolve().parents[2]


def _probed_globals() -> list[str]:
    return [f"{n}.{a}" for n, m in list(sys.modules.items()) if n.startswith("kvmsim") and m is not None
            for a, v in vars(m).items() if isinstance(v, FunctionType) and v in probe._PLAIN]


def test_every_cycle_records_calls_and_restores_plain_functions() -> None:
    modelled_functions()
    counts = []
    for name in ("mmio-read-no-decode", "port-in", "mmio-read-no-decode"):
        cap = capture_sim(load_scenario(REPO / "scenarios" / f"{name}.yaml"))
        calls = [ev for ev in cap.events if ev.kind == "call"]
        counts.append(len(calls))
        # one kvm_arch_vcpu_ioctl_run call per KVM_RUN: a return to userspace for each but the last stop
        assert sum(ev.name == "kvm_arch_vcpu_ioctl_run" for ev in calls) == cap.result.userspace_count
        assert not probe.PROBES.enabled and _probed_globals() == []
    assert counts[0] == counts[2] > 0
    assert all(probe._PROBED[f] is not f for f in probe._PROBED)   # the plain→probed table is intact
