"""Record the probe stream as trace lines: kernel tracepoints in their TP_printk format, calls as a graph.

Deterministic: lines carry a sequence number, never a timestamp.
"""

from __future__ import annotations

from collections import Counter

from kvmsim.probe import PROBES, Event
from kvmsim.kvm.trace import format_event


class Recorder:
    """Subscribe to PROBES while a run happens; keep every event."""

    def __init__(self, functions: bool = True) -> None:
        self.events: list[Event] = []
        self.functions = functions

    def __call__(self, ev: Event) -> None:
        if ev.kind == "tp" or self.functions:
            self.events.append(ev)

    def start(self) -> "Recorder":
        PROBES.subscribe(self)
        return self

    def stop(self) -> None:
        PROBES.unsubscribe(self)

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def lines(self) -> list[str]:
        """ftrace-like text: `kvm_exit: vcpu 0 reason IO_INSTRUCTION ...` and an indented call graph."""
        out = []
        for ev in self.events:
            if ev.kind == "tp":
                out.append(f"{'  ' * len(ev.stack)}{ev.name}: {format_event(ev.name, ev.fields)}")
            elif ev.kind == "call":
                args = _fmt(ev.fields)
                out.append(f"{'  ' * len(ev.stack)}{ev.name}({args}) {{")
            else:
                out.append(f"{'  ' * len(ev.stack)}}} = {ev.fields.get('ret')}")
        return out

    def stacks(self, function: str) -> Counter:
        """bpftrace `@[kstack] = count()` on a function: how often each call chain reached it."""
        return Counter(ev.stack + (ev.name,) for ev in self.events if ev.kind == "call" and ev.name == function)


def _fmt(fields: dict) -> str:
    return ", ".join(f"{k}={hex(v) if isinstance(v, int) and not isinstance(v, bool) else v}"
                     for k, v in fields.items())
