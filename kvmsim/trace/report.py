"""Tracepoints as `trace-cmd report` prints them, and the parser that reads that text back.

    kvmsim-1000  [000]     1.000070: kvm_exit:             vcpu 0 reason IO_INSTRUCTION rip 0x1000 ...

One line per event: `comm-pid [cpu] seconds.micros: event: text`, the text being the
event's TP_printk output (kvm/trace.py).  `parse_report` accepts this layout and
tracefs's own (`cat trace`, which adds irq flags), so sim and host traces read alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from kvmsim.kvm.trace import format_event
from kvmsim.probe import Event
from kvmsim.trace.clock import VirtualClock
from kvmsim.trace.tracepoints import parse_event

SIM_COMM, SIM_PID = "kvmsim", 1000   # the simulated vCPU thread: fixed, so runs compare byte for byte

_LINE = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                   r"(?:(?P<flags>[^\s\d]\S{3,5})\s+)?(?P<sec>\d+)\.(?P<frac>\d+):\s+(?P<event>\w+):\s+(?P<text>.*)$")


@dataclass(slots=True)
class TraceLine:
    """One event of a report: who, where, when (ns), what, and its fields read from the text."""

    comm: str
    pid: int
    cpu: int
    ts_ns: int
    event: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


def format_line(t: TraceLine) -> str:
    sec, ns = divmod(t.ts_ns, 1_000_000_000)
    return f"{t.comm:>16}-{t.pid:<5} [{t.cpu:03d}] {sec:5d}.{ns // 1000:06d}: {t.event + ':':<21} {t.text}"


def format_report(lines: Iterable[TraceLine], cpus: int = 1) -> Iterator[str]:
    yield f"cpus={cpus}"
    for t in lines:
        yield format_line(t)


def parse_line(line: str) -> TraceLine | None:
    m = _LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    frac = m["frac"]
    ts_ns = int(m["sec"]) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
    event, text = m["event"], m["text"]
    return TraceLine(m["comm"].strip(), int(m["pid"]), int(m["cpu"]), ts_ns, event, text,
                     parse_event(event, text) or {})


def parse_report(text: str) -> list[TraceLine]:
    """Every event line of a report (the `cpus=` header, comments and blank lines are skipped)."""
    return [t for line in text.splitlines() if line.strip() and not line.startswith(("#", "cpus="))
            and (t := parse_line(line)) is not None]


def sim_line(ev: Event, ts_ns: int) -> TraceLine:
    """One sim tracepoint as a report line: its TP_printk text, and the fields read back from it
    (so filters see the kernel's representation, as they do for a host trace)."""
    text = format_event(ev.name, ev.fields)
    return TraceLine(SIM_COMM, SIM_PID, 0, ts_ns, ev.name, text, parse_event(ev.name, text) or {})


def sim_lines(events: Iterable[Event], clock: VirtualClock | None = None) -> Iterator[TraceLine]:
    """The tracepoints of a sim probe stream as report lines, stamped on the virtual clock."""
    clock = clock or VirtualClock()
    for ev in events:
        ts = clock.stamp(ev)
        if ev.kind == "tp":
            yield sim_line(ev, ts)
