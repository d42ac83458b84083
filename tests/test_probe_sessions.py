"""Trace sessions in one process: each sees the whole stream, and tracing off leaves no probe behind.
Also the tracing-cost evidence that is not a benchmark: a streamed trace's heap does not grow with the run."""

from __future__ import annotations

import sys
from pathlib import Path
from types import FunctionType

from kvmsim.probe import _PLAIN, _PROBED, PROBES
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario

ROOT = Path(__file__).resolve().parents[1]


def _session(sc) -> list[tuple[str, str]]:
    seen: list = []
    sub = seen.append
    PROBES.subscribe(sub)
    try:
        run_scenario(sc)
    finally:
        PROBES.unsubscribe(sub)
    return [(e.kind, e.name) for e in seen]


def _probed_globals() -> list[str]:
    """kvmsim module globals that still name a probed twin (there must be none with tracing off)."""
    return [f"{name}.{attr}" for name, mod in list(sys.modules.items()) if name.startswith("kvmsim") and mod
            for attr, val in vars(mod).items() if isinstance(val, FunctionType) and val in _PLAIN]


def test_second_and_third_sessions_see_the_same_stream() -> None:
    sc = load_scenario(ROOT / "scenarios" / "mmio-read-no-decode.yaml")
    first = _session(sc)
    assert ("call", "x86_emulate_instruction") in first
    assert _session(sc) == first
    assert _session(sc) == first


def test_tracing_off_restores_every_plain_function() -> None:
    _session(load_scenario(ROOT / "scenarios" / "mmio-read-no-decode.yaml"))
    assert not PROBES.enabled
    assert _probed_globals() == []
    assert all(_PROBED[plain] is not plain and _PLAIN[_PROBED[plain]] is plain for plain in _PROBED)


def test_streaming_a_trace_to_a_file_does_not_grow_the_heap_with_the_run() -> None:
    from kvmsim.bench import stream_peak_heap
    small, big = stream_peak_heap(300), stream_peak_heap(1200)
    assert big < 1.5 * small, (small, big)   # 4x the exits, not 4x the memory
