"""Run one scenario and keep what tracing saw: the sim's probe stream, or the real host's tracefs lines.

    cap = capture_sim(scenario)          # cap.result (RunResult), cap.events (probe.Event list)
    cap = capture_kvm(scenario)          # cap.lines (report.TraceLine list) or cap.unavailable
    result = stream_sim(scenario, on_line)   # each TraceLine as it happens, nothing kept (bounded memory)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from kvmsim.kvm.trace import TRACE_EVENTS
from kvmsim.probe import PROBES, Event
from kvmsim.realkvm.backend import vendor_module
from kvmsim.realkvm.tracefs import _find_tracefs, open_trace
from kvmsim.scenario.runner import run_scenario
from kvmsim.trace.clock import VirtualClock
from kvmsim.trace.recorder import Recorder
from kvmsim.trace.report import TraceLine, parse_line, sim_line, sim_lines


@dataclass
class Capture:
    result: Any = None                               # scenario.result.RunResult
    events: list[Event] = field(default_factory=list)
    lines: list[TraceLine] = field(default_factory=list)
    unavailable: str = ""                            # kvm backend: why the host trace could not be read
    module: str = ""                                 # kvm backend: the vendor module (kvm_intel, kvm_pvm, ...)


def capture_sim(sc: Any, functions: bool = True) -> Capture:
    """Run on the sim with every probe on; the run's result and its whole event stream."""
    rec = Recorder(functions=functions).start()
    try:
        result = run_scenario(sc, backend="sim")
    finally:
        rec.stop()
    return Capture(result=result, events=rec.events, lines=list(sim_lines(rec.events)))


def stream_sim(sc: Any, on_line: Callable[[TraceLine], None]) -> Any:
    """Run on the sim and hand each tracepoint to on_line as it is emitted; returns the RunResult.

    The same lines, timestamps included, as capture_sim(sc).lines, without keeping the stream."""
    clock = VirtualClock()

    def sub(ev: Event) -> None:
        ts = clock.stamp(ev)
        if ev.kind == "tp":
            on_line(sim_line(ev, ts))

    PROBES.subscribe(sub)
    try:
        return run_scenario(sc, backend="sim")
    finally:
        PROBES.unsubscribe(sub)


def capture_kvm(sc: Any) -> Capture:
    """Run on /dev/kvm with the host's kvm tracepoints (those of TRACE_EVENTS it has) on for this process."""
    cap = Capture(module=vendor_module())
    root, _, why = _find_tracefs()
    if root is None:
        cap.unavailable = why
        return cap
    names = [n for n in TRACE_EVENTS if (root / "events" / "kvm" / n).is_dir()]
    trace, why = open_trace(names)
    if trace is None:
        cap.unavailable = why
        return cap
    try:
        trace.start()
    except OSError as e:
        cap.unavailable = f"cannot start a tracefs instance: {e.strerror or e}"
        return cap
    try:
        cap.result = run_scenario(sc, backend="kvm", host_events=False)
    finally:
        trace.stop()
    cap.lines = [t for line in trace.raw.splitlines() if not line.startswith("#") and (t := parse_line(line))]
    return cap
