"""kvmsim stat / census / exports: each output parsed back and checked against the run's own exit log
(RunResult) and the raw probe stream (the JSON Lines file read as plain JSON), never fixed numbers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from kvmsim.probe import PROBES
from kvmsim.scenario.loader import load_scenario
from kvmsim.trace import census as census_mod
from kvmsim.trace import stat as stat_mod
from kvmsim.trace.census import Census
from kvmsim.trace.events import JsonlWriter, Tap, read_events, replay
from kvmsim.trace.export import PerfettoWriter
from kvmsim.trace.stat import KvmStat

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ["census.yaml", "census-nested.yaml", "mmio-read-no-decode.yaml", "rep-insb-long64.yaml"]
NMI_TYPE_MASK, NMI_INFO = 0x80000700, 0x80000200


class _Live:
    """Consumer that keeps (seq, kind, name, stack) as the live stream had them."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def begin_run(self, run) -> None: ...
    def end_run(self, run) -> None: ...

    def feed(self, ev, ts) -> None:
        self.events.append((ev.seq, ev.kind, ev.name, ev.stack))


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """Every scenario run once with all reports and exports watching."""
    d = tmp_path_factory.mktemp("trace")
    jsonl, perfetto = d / "events.jsonl", d / "timeline.json"
    stats = {e: KvmStat(e) for e in stat_mod.EVENTS}
    census, live = Census(), _Live()
    results = []
    with open(jsonl, "w") as jf, open(perfetto, "w") as pf:
        pw = PerfettoWriter(pf)
        consumers = [*stats.values(), census, live, JsonlWriter(jf), pw]
        for name in SCENARIOS:
            results.append(Tap(consumers).run(load_scenario(ROOT / "scenarios" / name)))
        pw.close()
    assert not PROBES.enabled
    return {"results": results, "stats": stats, "census": census, "live": live, "jsonl": jsonl,
            "perfetto": perfetto, "dir": d}


def _raw(jsonl: Path) -> list[list[dict]]:
    """The JSON Lines file as plain dicts, one list per run (independent of read_events)."""
    runs: list[list[dict]] = []
    for line in jsonl.read_text().splitlines():
        d = json.loads(line)
        if d["kind"] == "meta" and d["name"] == "run":
            runs.append([])
        elif d["kind"] != "meta":
            runs[-1].append(d)
    return runs


def _last_exit_reason(events: list[dict]) -> int:
    """The exit a run stopped in: the last kvm_exit, with no kvm_entry after it."""
    exits = [e for e in events if e["kind"] == "tp" and e["name"] in ("kvm_exit", "kvm_entry")]
    assert exits[-1]["name"] == "kvm_exit"
    return exits[-1]["fields"]["exit_reason"]


# ---------------------------------------------------------------- JSON Lines

def test_jsonl_has_every_event_in_the_documented_schema(traced) -> None:
    lines = [json.loads(x) for x in traced["jsonl"].read_text().splitlines()]
    assert all(tuple(d) == ("seq", "kind", "name", "depth", "ts_ns", "fields") for d in lines)
    events = [d for d in lines if d["kind"] != "meta"]
    assert [(d["seq"], d["kind"], d["name"]) for d in events] == [e[:3] for e in traced["live"].events]
    ends = [d["fields"] for d in lines if d["kind"] == "meta" and d["name"] == "end"]
    assert [e["exits"] for e in ends] == [r.exits for r in traced["results"]]
    for run in _raw(traced["jsonl"]):
        assert [e["ts_ns"] for e in run] == sorted(e["ts_ns"] for e in run)
        depth = 0
        for e in run:       # depth is the call nesting: call at depth d, then d+1 inside, ret at d
            depth -= e["kind"] == "ret"
            assert e["depth"] == depth
            depth += e["kind"] == "call"


def test_jsonl_exit_counts_match_each_runs_exit_log(traced) -> None:
    from kvmsim.hw.vmcs import exit_reason_name
    for run, res in zip(_raw(traced["jsonl"]), traced["results"]):
        exits = Counter(exit_reason_name(e["fields"]["exit_reason"]) for e in run
                        if e["kind"] == "tp" and e["name"] == "kvm_exit")
        assert dict(exits) == res.exits
        emul = Counter(census_mod.emultype_name(e["fields"]["emulation_type"]) for e in run
                       if e["kind"] == "call" and e["name"] == "x86_emulate_instruction")
        assert dict(emul) == {k: n for k, n in res.emulation.items() if n}


def test_read_events_rebuilds_the_live_call_stacks(traced) -> None:
    replayed = [(ev.seq, ev.kind, ev.name, ev.stack) for what, ev, _ in read_events(traced["jsonl"])
                if what == "event"]
    assert replayed == traced["live"].events


def test_replayed_file_gives_the_same_reports(traced) -> None:
    census, stat = Census(), KvmStat("vmexit")
    replay(traced["jsonl"], [census, stat])
    assert census.to_dict() == traced["census"].to_dict()
    assert {k: s.n for k, s in stat.table.items()} == {k: s.n for k, s in traced["stats"]["vmexit"].table.items()}


# ---------------------------------------------------------------- perf kvm stat

def test_stat_vmexit_samples_are_the_exit_log_less_the_exit_each_run_stopped_in(traced) -> None:
    from kvmsim.hw.vmcs import exit_reason_name
    stat = traced["stats"]["vmexit"]
    rows = stat_mod.parse_report(stat.report())
    want: Counter = Counter()
    for run, res in zip(_raw(traced["jsonl"]), traced["results"]):
        want.update(res.exits)
        want[exit_reason_name(_last_exit_reason(run))] -= 1
    assert {k: r["samples"] for k, r in rows.items()} == {k: n for k, n in want.items() if n}
    assert stat.unfinished == len(traced["results"])
    assert sum(r["samples_pct"] for r in rows.values()) == pytest.approx(100, abs=0.05 * len(rows))
    assert sum(r["time_pct"] for r in rows.values()) == pytest.approx(100, abs=0.05 * len(rows))
    for r in rows.values():
        assert r["min_us"] <= r["avg_us"] <= r["max_us"]
    text = "\n".join(stat.report())
    assert "simulator wall-clock handling time" in text
    assert f"Total Samples:{sum(want.values())}," in text


def test_stat_keys_sort_as_perf_does(traced) -> None:
    stat = traced["stats"]["vmexit"]
    by_n = list(stat_mod.parse_report(stat.report("sample")).values())
    by_t = list(stat_mod.parse_report(stat.report("time")).values())
    assert [r["samples"] for r in by_n] == sorted((r["samples"] for r in by_n), reverse=True)
    assert [r["avg_us"] for r in by_t] == sorted((r["avg_us"] for r in by_t), reverse=True)


def test_stat_mmio_reads_and_writes_match_the_kvm_mmio_events(traced) -> None:
    rows = stat_mod.parse_report(traced["stats"]["mmio"].report())
    want: Counter = Counter()
    for run in _raw(traced["jsonl"]):
        for e in run:
            if e["kind"] == "tp" and e["name"] == "kvm_mmio" and e["fields"]["type"] in (1, 2):
                want[f"{e['fields']['gpa']:#x}:{'W' if e['fields']['type'] == 2 else 'R'}"] += 1
    assert {k: r["samples"] for k, r in rows.items()} == dict(want)
    # and the reads are exactly the MMIO reads userspace served (the exit log)
    reads = Counter(f"{u.fields['phys_addr']:#x}:R" for res in traced["results"] for u in res.userspace
                    if u.reason == "MMIO" and not u.fields["is_write"])
    assert {k: r["samples"] for k, r in rows.items() if k.endswith(":R")} == dict(reads)


def test_stat_ioport_matches_the_userspace_io_exits(traced) -> None:
    rows = stat_mod.parse_report(traced["stats"]["ioport"].report())
    want: Counter = Counter()
    for res in traced["results"]:
        assert res.userspace_omitted == 0
        io = [u for u in res.userspace if u.reason == "IO"]
        for u in io[:-1]:   # the last is the debug-exit OUT the run stopped in: no kvm_entry ends it
            want[f"{u.fields['port']:#x}:{'POUT' if u.fields['direction'] else 'PIN'}"] += 1
    assert {k: r["samples"] for k, r in rows.items()} == dict(want)


# ---------------------------------------------------------------- census

def test_census_counts_match_the_exit_log(traced) -> None:
    d = traced["census"].to_dict()
    emul: Counter = Counter()
    exits: Counter = Counter()
    for res in traced["results"]:
        emul.update(res.emulation)
        exits.update(res.exits)
    assert d["by_emultype_combination"] == {k: n for k, n in emul.items() if n}
    assert d["exits"] == dict(exits)
    total = sum(emul.values())
    for table in ("by_handler", "by_path", "by_mnemonic", "outcomes"):
        assert sum(d[table].values()) == total, table
    assert d["by_mnemonic"]["vmmcall"] == emul["TRAP_UD"]
    assert sum(d["no_decode_completing"].values()) == emul["NO_DECODE"]


def test_census_paths_name_the_handlers_the_stream_shows(traced) -> None:
    d = traced["census"].to_dict()
    paths = d["by_path"]
    assert paths["handle_exception_nmi → handle_ud → kvm_emulate_instruction → x86_emulate_instruction"] \
        == d["by_emultype_combination"]["TRAP_UD"]
    no_decode = sum(n for p, n in paths.items() if p.startswith(("complete_emulated_mmio", "complete_emulated_pio")))
    assert no_decode == d["by_emultype_combination"]["NO_DECODE"]
    skip = [p for p in paths if "vmx_skip_emulated_instruction" in p]
    assert skip and all(p.startswith("handle_ept_misconfig") for p in skip)
    assert sum(paths[p] for p in skip) == d["by_emultype_combination"]["SKIP"]


def test_census_outcomes_and_host_nmis_from_the_raw_stream(traced) -> None:
    d = traced["census"].to_dict()
    restarts = nmi = nmi_quiet = failed = 0
    for run in _raw(traced["jsonl"]):
        in_nmi, emulated = False, 0
        for e in run:
            if e["kind"] == "ret" and e["name"] == "x86_emulate_insn" and e["fields"]["ret"] == 1:
                restarts += 1
            if e["kind"] == "call" and e["name"] == "handle_emulation_failure":
                failed += 1
            if e["kind"] == "call" and e["name"] == "x86_emulate_instruction":
                emulated += 1
            if e["kind"] == "tp" and e["name"] in ("kvm_exit", "kvm_entry"):
                if in_nmi:
                    nmi += 1
                    nmi_quiet += emulated == 0
                in_nmi = e["name"] == "kvm_exit" and e["fields"]["exit_reason"] == 0 and \
                    e["fields"]["intr_info"] & NMI_TYPE_MASK == NMI_INFO
                emulated = 0
        if in_nmi:
            nmi += 1
            nmi_quiet += emulated == 0
    assert d["restarts"] == restarts and d["outcomes"]["failed"] == failed
    assert d["host_nmi_exits"] == nmi > 0
    assert d["host_nmi_exits_without_emulation"] == nmi_quiet == nmi


def test_census_text_report_reads_back(traced) -> None:
    c = traced["census"]
    d = c.to_dict()
    back = census_mod.parse_report(c.report())
    assert back["by EMULTYPE combination"] == d["by_emultype_combination"]
    assert back["by entry path"] == d["by_path"]
    assert back["by instruction"] == d["by_mnemonic"]
    assert back["outcomes"] == d["outcomes"]
    assert back["VM exits"] == d["exits"]
    assert back["host NMI"] == {"exits": d["host_nmi_exits"], "without_emulation": d["host_nmi_exits_without_emulation"]}
    text = "\n".join(c.report())
    for k in d["by_emultype_combination"]:
        assert census_mod.WHY[k] in text    # every count says how it arises


# ---------------------------------------------------------------- Perfetto / Chrome trace-event JSON

# The Trace Event Format (the "JSON Object Format" with traceEvents), as a JSON Schema: the phases
# this exporter writes and the fields each one requires there.
TRACE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
        "traceEvents": {"type": "array", "items": {
            "type": "object",
            "required": ["ph", "pid", "tid"],
            "properties": {
                "name": {"type": "string"}, "cat": {"type": "string"},
                "ph": {"enum": ["B", "E", "X", "i", "I", "M", "C"]},
                "ts": {"type": "number", "minimum": 0}, "dur": {"type": "number", "minimum": 0},
                "pid": {"type": "integer"}, "tid": {"type": "integer"},
                "s": {"enum": ["g", "p", "t"]}, "args": {"type": "object"},
            },
            "allOf": [
                {"if": {"properties": {"ph": {"const": "X"}}}, "then": {"required": ["name", "ts", "dur"]}},
                {"if": {"properties": {"ph": {"enum": ["B", "i", "I"]}}}, "then": {"required": ["name", "ts"]}},
                {"if": {"properties": {"ph": {"const": "E"}}}, "then": {"required": ["ts"]}},
                {"if": {"properties": {"ph": {"const": "M"}}},
                 "then": {"required": ["name", "args"],
                          "properties": {"name": {"enum": ["process_name", "thread_name", "thread_sort_index",
                                                           "process_sort_index"]}}}},
            ],
        }},
    },
}


def test_perfetto_json_validates_and_its_slices_match_the_run(traced) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from kvmsim.trace.export import TID_EXIT, TID_GUEST, TID_KERNEL, TID_VMM
    doc = json.loads(traced["perfetto"].read_text())
    jsonschema.validate(doc, TRACE_EVENT_SCHEMA)
    evs = doc["traceEvents"]
    pids = sorted({e["pid"] for e in evs})
    assert len(pids) == len(traced["results"])
    for pid, res, run in zip(pids, traced["results"], _raw(traced["jsonl"])):
        mine = [e for e in evs if e["pid"] == pid]
        stack = []
        for e in mine:      # B/E properly nested on the kernel track, as the calls were
            if e["ph"] == "B":
                stack.append(e["name"])
            elif e["ph"] == "E":
                assert stack and (e.get("name") in (None, stack[-1]))
                stack.pop()
        assert stack == []
        calls = sum(1 for e in run if e["kind"] == "call")
        assert sum(1 for e in mine if e["ph"] == "B" and e["tid"] == TID_KERNEL) == calls
        exits = Counter(e["name"] for e in mine if e["ph"] == "X" and e["tid"] == TID_EXIT)
        assert dict(exits) == res.exits
        entries = sum(1 for e in run if e["kind"] == "tp" and e["name"] == "kvm_entry")
        assert sum(1 for e in mine if e["ph"] == "X" and e["tid"] == TID_GUEST) == entries
        assert sum(1 for e in mine if e["ph"] == "X" and e["tid"] == TID_VMM) == res.userspace_count
        names = {e["args"]["name"] for e in mine if e["ph"] == "M" and e["name"] == "thread_name"}
        assert names == {"vCPU 0: guest", "vCPU 0: exit handling", "vCPU 0: KVM (kernel)", "VMM (userspace)"}


# ---------------------------------------------------------------- chart

def test_census_chart_svg_shows_the_census_counts(traced, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from kvmsim.trace.export import census_chart
    d = traced["census"].to_dict()
    out = tmp_path / "census.svg"
    census_chart(d, str(out))
    texts = [t.text or "" for t in ET.parse(out).getroot().iter() if t.tag.endswith("text")]
    texts = [x.strip() for x in texts] + [x.strip() for t in ET.parse(out).getroot().iter()
                                          if t.tag.endswith("tspan") for x in [t.text or ""]]
    for k, n in list(d["exits"].items()) + list(d["by_emultype_combination"].items()):
        assert k in texts and str(n) in texts, k


# ---------------------------------------------------------------- command line

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmsim", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_cli_stat_and_census_on_a_recorded_file(traced) -> None:
    r = _cli("stat", str(traced["jsonl"]), "--event", "ioport", "--key", "time")
    assert r.returncode == 0, r.stderr
    assert stat_mod.parse_report(r.stdout.splitlines()) == stat_mod.parse_report(
        traced["stats"]["ioport"].report("time"))
    r = _cli("census", str(traced["jsonl"]), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["by_emultype_combination"] == traced["census"].to_dict()["by_emultype_combination"]


def test_cli_bad_input_is_status_2_without_a_traceback(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"seq": 1}\n')
    for args in (("stat", str(bad)), ("census", str(tmp_path / "missing.jsonl")), ("stat", "x.yaml", "--event", "nope")):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
    assert re.search(r"bad\.jsonl:1: not a kvmsim event line", _cli("census", str(bad)).stderr)


def test_write_jsonl_as_a_function_round_trips(traced, tmp_path) -> None:
    """The exporter other commands call (kvmsim trace --jsonl): same lines, another clock labelled."""
    from kvmsim.trace.events import RunInfo, write_jsonl
    evs = [(ev, t) for what, ev, t in read_events(traced["jsonl"]) if what == "event"]
    out = tmp_path / "again.jsonl"
    with open(out, "w") as f:
        n = write_jsonl(evs, f, RunInfo("again"), clock="virtual")
    assert n == len(evs) + 2
    first = json.loads(out.read_text().splitlines()[0])
    assert first["fields"]["clock"] == "virtual"
    back = [(ev.seq, ev.kind, ev.name, ev.stack, t) for what, ev, t in read_events(out) if what == "event"]
    assert back == [(ev.seq, ev.kind, ev.name, ev.stack, t) for ev, t in evs]


def test_cli_census_runs_a_scenario_and_writes_the_exports(tmp_path) -> None:
    jl, pf = tmp_path / "e.jsonl", tmp_path / "t.json"
    r = _cli("census", "scenarios/mmio-read-no-decode.yaml", "--json", "--jsonl", str(jl), "--perfetto", str(pf))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    (log,) = d["run_logs"]                       # the run's own exit log, from its RunResult
    assert d["by_emultype_combination"] == {k: n for k, n in log["emulation"].items() if n}
    assert d["exits"] == log["exits"]
    assert json.loads(pf.read_text())["traceEvents"]
    r2 = _cli("census", str(jl), "--json")       # the recorded file reports the same
    assert json.loads(r2.stdout) == d


def test_cli_trace_jsonl_is_the_same_stream_as_the_trace_lines(tmp_path) -> None:
    """kvmsim trace --jsonl: every probe event; its tracepoints are the printed lines, in order, on
    the same virtual clock; and stat/census read it (stat says its times are not measured)."""
    out = tmp_path / "t.jsonl"
    r = _cli("trace", "scenarios/mmio-read-no-decode.yaml", "--jsonl", str(out))
    assert r.returncode == 0, r.stderr
    printed = [(m[2], m[1]) for m in re.finditer(r"^\s*\S+-\d+\s+\[\d+\]\s+(\d+\.\d{6}): (\w+):", r.stdout, re.M)]
    tps = [(ev.name, f"{t // 10**9}.{t // 1000 % 10**6:06d}") for what, ev, t in read_events(out) if what == "event" and ev.kind == "tp"]
    assert printed and printed == tps
    calls = [ev.name for what, ev, t in read_events(out) if what == "event" and ev.kind == "call"]
    assert "x86_emulate_instruction" in calls and "complete_emulated_mmio" in calls
    s = _cli("stat", str(out))
    assert s.returncode == 0 and "Time: NOT measured" in s.stdout
    assert _cli("trace", "scenarios/mmio-read-no-decode.yaml", "--jsonl", str(out), "--backend", "kvm").returncode == 2
