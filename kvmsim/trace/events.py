"""The probe stream as a file: one JSON object per line (JSON Lines), streamed, in bounded memory.

Schema (every line has these keys; README "Tracing reports"):

  seq     int   the probe stream's sequence number (0 on a `meta` line)
  kind    str   "call" | "ret" (a modelled kernel function, @kfunc) | "tp" (a kernel tracepoint)
                | "meta" (name "run": one run begins, fields = scenario, file, backend, clock;
                          name "end": it ended, fields = stop, exits, emulation)
  name    str   the kernel function or tracepoint name (kvm_exit, x86_emulate_instruction, ...)
  depth   int   how many modelled kernel functions were on the stack when it was emitted
  ts_ns   int   simulator wall-clock nanoseconds since the run began (measured, not a real host's)
  fields  obj   the recorded arguments (call), {"ret": value} (ret), or the tracepoint's fields (tp)

The call stack is not repeated on every line (a million-exit run would be gigabytes): it is the
nesting of call/ret lines, and `read_events` rebuilds it, so each Event it yields has `stack` as
the probe stream had it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Protocol

from kvmsim.probe import PROBES, Event
from kvmsim.scenario.runner import run_scenario

SCHEMA_KEYS = ("seq", "kind", "name", "depth", "ts_ns", "fields")
KINDS = ("call", "ret", "tp", "meta")
CLOCK = "simulator wall-clock ns since the run began (time.perf_counter_ns), not a host's"


@dataclass
class RunInfo:
    """What a `meta` line says about one run."""

    scenario: str
    file: str | None = None
    backend: str = "sim"
    end: dict[str, Any] = field(default_factory=dict)   # stop, exits, emulation (the run's own log)
    clock: str = CLOCK                                   # what the events' ts_ns mean


class Consumer(Protocol):
    """A report built from the stream: begin, one call per event (with its time), end."""

    def begin_run(self, run: RunInfo) -> None: ...
    def feed(self, ev: Event, ts_ns: int) -> None: ...
    def end_run(self, run: RunInfo) -> None: ...


class Tap:
    """The one PROBES subscriber: stamps each event once and hands it to every consumer."""

    def __init__(self, consumers: Iterable[Consumer]) -> None:
        self.consumers = list(consumers)
        self._feeds: list[Callable[[Event, int], None]] = [c.feed for c in self.consumers]
        self._t0 = 0
        self._first_seq = 1

    def __call__(self, ev: Event) -> None:
        now = time.perf_counter_ns()
        if ev.seq == self._first_seq:     # the clock starts at the run's first event, not at VM set-up
            self._t0 = now
        t = now - self._t0
        for f in self._feeds:
            f(ev, t)

    def run(self, sc: Any, backend: str = "sim") -> Any:
        """Run one scenario with every consumer watching; the RunResult."""
        info = RunInfo(sc.name, str(sc.path) if getattr(sc, "path", None) else None, backend)
        for c in self.consumers:
            c.begin_run(info)
        self._first_seq = PROBES.seq + 1
        PROBES.subscribe(self)
        try:
            res = run_scenario(sc, backend=backend)
        finally:
            PROBES.unsubscribe(self)
        info.end = run_end(res)
        for c in self.consumers:
            c.end_run(info)
        return res


def run_end(res: Any) -> dict[str, Any]:
    """The run's own exit log, as the `end` meta line carries it (tests compare reports with it)."""
    return {"stop": res.stop.reason, "stop_code": res.stop.code, "exits": dict(res.exits),
            "emulation": dict(res.emulation), "userspace_exits": res.userspace_count}


class JsonlWriter:
    """Consumer that streams every event to a file (bounded memory: one line at a time)."""

    def __init__(self, out: IO[str], clock: str = CLOCK) -> None:
        self.out = out
        self.lines = 0
        self.clock = clock     # what ts_ns means (another clock, e.g. trace/clock.py's virtual one, says so)

    def _write(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":"), default=_jsonable))
        self.out.write("\n")
        self.lines += 1

    def begin_run(self, run: RunInfo) -> None:
        self._write({"seq": 0, "kind": "meta", "name": "run", "depth": 0, "ts_ns": 0,
                     "fields": {"scenario": run.scenario, "file": run.file, "backend": run.backend,
                                "clock": self.clock}})

    def feed(self, ev: Event, ts_ns: int) -> None:
        self._write({"seq": ev.seq, "kind": ev.kind, "name": ev.name, "depth": len(ev.stack),
                     "ts_ns": ts_ns, "fields": ev.fields})

    def end_run(self, run: RunInfo) -> None:
        self._write({"seq": 0, "kind": "meta", "name": "end", "depth": 0, "ts_ns": 0, "fields": run.end})
        self.out.flush()


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=str)
    if hasattr(v, "__int__"):
        return int(v)
    return repr(v)


def write_jsonl(events: Iterable[tuple[Event, int]], out: IO[str], run: RunInfo | None = None,
                clock: str = CLOCK) -> int:
    """The exporter as a function (`kvmsim trace --jsonl` can call it): (Event, ts_ns) pairs to
    lines, framed by the run's meta lines when `run` is given; returns how many lines were written."""
    w = JsonlWriter(out, clock)
    if run is not None:
        w.begin_run(run)
    for ev, t in events:
        w.feed(ev, t)
    if run is not None:
        w.end_run(run)
    out.flush()
    return w.lines


class JsonlSession:
    """One run's events to a JSON Lines file with the caller's clock, beside whatever else watches
    the run (`kvmsim trace --jsonl` stamps them with trace/clock.py's virtual clock):

        with JsonlSession(out, RunInfo(sc.name), clock.stamp, "virtual") as js:
            res = run_it()
        js.end(res)
    """

    def __init__(self, out: IO[str], run: RunInfo, stamp: Callable[[Event], int], clock: str) -> None:
        run.clock = clock
        self.run, self.stamp = run, stamp
        self.writer = JsonlWriter(out, clock)

    def _sub(self, ev: Event) -> None:
        self.writer.feed(ev, self.stamp(ev))

    def __enter__(self) -> "JsonlSession":
        self.writer.begin_run(self.run)
        PROBES.subscribe(self._sub)
        return self

    def __exit__(self, *exc: Any) -> None:
        PROBES.unsubscribe(self._sub)

    def end(self, res: Any) -> None:
        self.run.end = run_end(res)
        self.writer.end_run(self.run)


class JsonlError(ValueError):
    """A line that does not follow the schema: the file, line number and why."""


def read_events(path: str | Path) -> Iterator[tuple[str, Any, int]]:
    """Replay a JSON Lines file: ("run", RunInfo, 0), ("event", Event, ts_ns)..., ("end", RunInfo, 0),
    one line at a time, the call stack rebuilt from the call/ret nesting."""
    stack: list[str] = []
    run: RunInfo | None = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlError(f"{path}:{n}: not JSON: {e.msg}") from None
            if not isinstance(d, dict) or any(k not in d for k in SCHEMA_KEYS) or d["kind"] not in KINDS:
                raise JsonlError(f"{path}:{n}: not a kvmsim event line (keys {', '.join(SCHEMA_KEYS)})")
            kind, name, fields = d["kind"], d["name"], d["fields"] or {}
            if kind == "meta":
                if name == "run":
                    stack.clear()
                    run = RunInfo(fields.get("scenario", "?"), fields.get("file"), fields.get("backend", "sim"),
                                  clock=fields.get("clock", CLOCK))
                    yield "run", run, 0
                elif name == "end" and run is not None:
                    run.end = fields
                    yield "end", run, 0
                continue
            if run is None:   # events without a run line: one anonymous run
                run = RunInfo(Path(path).stem)
                yield "run", run, 0
            if kind == "ret" and stack:
                stack.pop()
            ev = Event(d["seq"], kind, name, tuple(stack), fields)
            if kind == "call":
                stack.append(name)
            yield "event", ev, d["ts_ns"]


def replay(path: str | Path, consumers: Iterable[Consumer]) -> list[RunInfo]:
    """Feed a recorded file to consumers exactly as a live run would."""
    consumers = list(consumers)
    runs: list[RunInfo] = []
    open_run: RunInfo | None = None
    for what, obj, t in read_events(path):
        if what == "run":
            open_run = obj
            runs.append(obj)
            for c in consumers:
                c.begin_run(obj)
        elif what == "end":
            for c in consumers:
                c.end_run(obj)
            open_run = None
        else:
            for c in consumers:
                c.feed(obj, t)
    if open_run is not None:   # a file cut short: its reports end where it ends
        for c in consumers:
            c.end_run(open_run)
    return runs
