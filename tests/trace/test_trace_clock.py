"""Trace time is virtual: every probe event carries the vCPU's retired guest instructions at
emission (ties ordered by sequence), the report's microseconds are that count, and emitters in
kvm/ pass fields only (the one printer is kvm/trace.py's TRACE_EVENTS)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kvmsim.kvm.trace import TRACE_EVENTS
from kvmsim.probe import PROBES, Event, no_clock
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario
from kvmsim.trace.capture import capture_sim
from kvmsim.trace.clock import INSN_NS, VirtualClock

REPO = Path(__file__).resolve().parents[2]

# xor, then (inc, out, jmp) per iteration; the OUT exits to userspace before it retires and
# retires when KVM completes it (complete_fast_pio_out skips it).
OUT_LOOP = """
name: clock-loop
description: trace clock test
guest:
  mode: {mode}
  asm: |
    xor %ecx, %ecx
    1: inc %ecx
    out %al, $0x80
    jmp 1b
limits: {{max_guest_insns: {n}, wall_seconds: 60}}
"""


def _capture(tmp_path: Path, text: str):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return capture_sim(load_scenario(f))


@pytest.mark.parametrize("mode", ["real16", "long64"])
def test_each_event_carries_the_instructions_retired_so_far(tmp_path: Path, mode: str) -> None:
    n = 31
    cap = _capture(tmp_path, OUT_LOOP.format(mode=mode, n=n))
    assert cap.result.stop.reason == "limit" and cap.result.guest_insns == n
    outs = [ev for ev in cap.events if ev.kind == "tp" and ev.name == "kvm_pio"]
    exits = [ev for ev in cap.events if ev.kind == "tp" and ev.name == "kvm_exit" and ev.fields["exit_reason"] == 30]
    # The k-th OUT runs after the xor and k iterations of three, then the inc: 2 + 3k retired.
    assert len(outs) == len(exits) == (n - 1) // 3
    assert [ev.insns for ev in exits] == [ev.insns for ev in outs] == [2 + 3 * k for k in range(len(outs))]
    entries = [ev for ev in cap.events if ev.kind == "tp" and ev.name == "kvm_entry"]
    # ... and is retired by the next VM entry (KVM completed it).
    assert [ev.insns for ev in entries[1:len(exits) + 1]] == [ev.insns + 1 for ev in exits]
    stream = [(ev.insns, ev.seq) for ev in cap.events]
    assert stream == sorted(stream) and stream[-1][0] == n


def test_report_time_is_the_instruction_count_and_ties_go_by_sequence(tmp_path: Path) -> None:
    cap = _capture(tmp_path, OUT_LOOP.format(mode="long64", n=31))
    tps = [ev for ev in cap.events if ev.kind == "tp"]
    assert [t.ts_ns // INSN_NS for t in cap.lines] == [ev.insns for ev in tps]
    stamps = [t.ts_ns for t in cap.lines]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)   # every event its own ns


def test_the_clock_orders_same_count_events_by_stream_order_and_caps_at_the_next_count() -> None:
    clock = VirtualClock()
    evs = [Event(i, "tp", "x", (), {}, 7) for i in range(1, INSN_NS + 3)] + [Event(9999, "tp", "x", (), {}, 8)]
    ts = [clock.stamp(ev) for ev in evs]
    assert ts[:3] == [7 * INSN_NS, 7 * INSN_NS + 1, 7 * INSN_NS + 2]
    assert max(ts[:-1]) == 8 * INSN_NS - 1 and ts[-1] == 8 * INSN_NS   # never runs into the next instruction


def test_an_uncounted_run_stamps_every_event_at_zero(tmp_path: Path) -> None:
    """limits.max_guest_insns null: the silicon counts nothing, so events order by sequence alone."""
    uncounted = OUT_LOOP.replace("max_guest_insns: {n}", "max_guest_insns: null, max_exits: {n}")
    cap = _capture(tmp_path, uncounted.format(mode="long64", n=8))
    assert cap.result.guest_insns is None and cap.events
    assert {ev.insns for ev in cap.events} == {0}


def test_the_clock_is_the_running_vcpus_and_goes_with_its_vm(tmp_path: Path) -> None:
    seen: list[int] = []

    def sub(ev: Event) -> None:
        seen.append(ev.insns)

    PROBES.subscribe(sub)
    try:
        for _ in range(2):   # a second VM counts from its own reset, not from the first one's count
            res = run_scenario(load_scenario(REPO / "scenarios" / "port-in.yaml"))
            assert PROBES.clock is no_clock
            assert seen[-1] == res.guest_insns
            del seen[:]
    finally:
        PROBES.unsubscribe(sub)


def test_tracing_off_never_reads_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The off path stays one boolean test: no event, no clock read, no formatting."""
    reads = []

    def install(hw: object) -> None:
        PROBES.clock = lambda: reads.append(1) or 0

    monkeypatch.setattr("kvmsim.kvm.kvm_main.install_trace_clock", install)
    monkeypatch.setattr(PROBES, "clock", PROBES.clock)     # put back after the test
    res = run_scenario(load_scenario(REPO / "scenarios" / "mmio-read-no-decode.yaml"))
    assert res.stop.reason == "debug-exit" and not PROBES.enabled and reads == []


def _tracepoint_calls() -> list[tuple[str, int, str, list[str]]]:
    out = []
    for path in sorted((REPO / "kvmsim" / "kvm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tracepoint":
                assert isinstance(node.args[0], ast.Constant), f"{path}:{node.lineno}: name the event literally"
                out.append((str(path.relative_to(REPO)), node.lineno, node.args[0].value,
                            [k.arg for k in node.keywords]))
    return out


def test_emitters_pass_exactly_the_events_fields_in_entry_order() -> None:
    """trace.h's TP_STRUCT__entry is the contract: no text, no extra or missing field, same order."""
    calls = _tracepoint_calls()
    assert len(calls) >= 13
    for where, line, name, keywords in calls:
        assert name in TRACE_EVENTS, f"{where}:{line}: {name} is not in kvm/trace.py's TRACE_EVENTS"
        assert tuple(keywords) == TRACE_EVENTS[name].fields, f"{where}:{line}: {name}"
