"""Where reports get their events: scenario files run now on the sim, or recorded JSON Lines replayed.

`kvmsim stat/census FILE...` accept both (a `.jsonl` file written by `--jsonl` is perf's
`perf.data`: record once, report many times).  Exports ride along as extra consumers.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable

from kvmsim.errors import ScenarioError
from kvmsim.scenario.loader import load_scenario, scenario_files
from kvmsim.trace.events import Consumer, JsonlError, JsonlWriter, Tap, replay
from kvmsim.trace.export import PerfettoWriter


def feed_files(files: Iterable[str], consumers: list[Consumer]) -> list[Any]:
    """Run or replay every file into the consumers; the RunResults of the runs made here."""
    results = []
    for f in files:
        p = Path(f)
        if p.suffix == ".jsonl":
            if not p.is_file():
                raise ScenarioError(f, None, "no such file")
            try:
                replay(p, consumers)
            except JsonlError as e:
                raise ScenarioError(f, None, str(e)) from None
            except OSError as e:
                raise ScenarioError(f, None, f"cannot read: {e.strerror}") from None
            continue
        paths = scenario_files([f])
        if not paths:
            raise ScenarioError(f, None, "no scenario files (*.yaml) or event files (*.jsonl) found")
        for sp in paths:
            sc = load_scenario(sp)
            if "sim" not in sc.backends:
                raise ScenarioError(str(sp), None, f"backend sim not in its backends {sc.backends}")
            results.append(Tap(consumers).run(sc))
    return results


def open_out(stack: ExitStack, path: str, what: str) -> Any:
    """An output file for an export, or a one-line error naming the flag."""
    try:
        return stack.enter_context(open(path, "w", encoding="utf-8"))
    except OSError as e:
        raise ScenarioError(path, None, f"--{what}: cannot write: {e.strerror}") from None


def export_consumers(stack: ExitStack, jsonl: str | None, perfetto: str | None) -> list[Any]:
    """The --jsonl and --perfetto writers asked for (PerfettoWriter closes with the stack)."""
    out: list[Any] = []
    if jsonl:
        out.append(JsonlWriter(open_out(stack, jsonl, "jsonl")))
    if perfetto:
        w = PerfettoWriter(open_out(stack, perfetto, "perfetto"))
        stack.callback(w.close)
        out.append(w)
    return out
