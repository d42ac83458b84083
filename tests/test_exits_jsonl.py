"""`kvmsim run --exits-jsonl FILE`: every userspace exit as one JSON object a line, written while the
run goes.  Each stream is parsed back and compared with the same run keeping its whole exit log in
memory (the stream must be exactly that log), and with the bounded log of the run that wrote it
(its kept head and tail are the stream's first and last lines, its exact count the line count)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.guest_build import binutils_available
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.result import RunResult, read_exit_stream
from kvmsim.scenario.runner import run_scenario
from kvmsim.vmm.runloop import STREAM_BATCH
from mmio_rw import mmio_rw_text

pytestmark = pytest.mark.skipif(not binutils_available(), reason="needs GNU binutils")
REPO = Path(__file__).resolve().parents[1]
LOOPS = 2600   # MMIO read + MMIO write per iteration, then EXIT: 2 * LOOPS + 1 exits (> STREAM_BATCH)

MMIO_RW = mmio_rw_text(LOOPS)


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("jsonl") / "mmio-rw.yaml"
    p.write_text(MMIO_RW)
    return p


@pytest.fixture(scope="module")
def full(scenario_file: Path) -> RunResult:
    return run_scenario(load_scenario(scenario_file), keep_exits=None)


def _run_cli(capsys, *argv: str) -> tuple[int, object]:
    status = main(["run", "--json", *argv])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("keep", ["default", "0", "7", "all"])
def test_stream_is_the_whole_log(tmp_path: Path, capsys, scenario_file: Path, full: RunResult, keep: str) -> None:
    out = tmp_path / "exits.jsonl"
    status, doc = _run_cli(capsys, "--exits-jsonl", str(out), "--keep-exits", keep, str(scenario_file))
    assert status == 0
    res = RunResult.from_dict(doc["result"])
    [(header, exits, end)] = read_exit_stream(out.read_text().splitlines())
    assert header == {"scenario": "mmio-rw-loop", "file": str(scenario_file), "backend": "sim"}
    # The count is exact, and the stream is the run's whole exit log, record for record.
    assert len(exits) == res.userspace_count == doc["result"]["userspace_count"] == 2 * LOOPS + 1
    assert exits == full.userspace
    assert end == {"scenario": "mmio-rw-loop", "userspace_count": 2 * LOOPS + 1,
                   "stop": {"reason": "debug-exit", "code": 0, "suberror": None, "detail": ""}}
    # What the result kept is the stream's head and tail.
    at = res.userspace_omitted_at if res.userspace_omitted else len(res.userspace)
    assert res.userspace[:at] == exits[:at]
    assert res.userspace[at:] == exits[len(exits) - (len(res.userspace) - at):]
    assert len(res.userspace) == (len(exits) if keep == "all" else 2 * {"default": 1000, "0": 0, "7": 7}[keep])
    # The records read back are the kernel's kvm_run fields.
    assert exits[0].reason == "MMIO" and exits[0].fields == {"phys_addr": 0xD0000000, "len": 4, "is_write": 0,
                                                              "data": "34120000"}
    assert exits[1].fields == {"phys_addr": 0xD0000004, "len": 4, "is_write": 1,
                               "data": LOOPS.to_bytes(4, "little").hex()}
    assert exits[-1].reason == "IO" and exits[-1].fields["port"] == 0xF4


def test_numbered_lines(tmp_path: Path, capsys, scenario_file: Path) -> None:
    out = tmp_path / "exits.jsonl"
    assert main(["run", "--exits-jsonl", str(out), str(scenario_file)]) == 0
    capsys.readouterr()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["n"] for x in lines[1:-1]] == list(range(1, 2 * LOOPS + 2))
    assert 2 * LOOPS + 1 > STREAM_BATCH    # the run outlasts one batch of the keep-all stream


def test_batch_of_files_and_a_broken_one(tmp_path: Path, capsys, scenario_file: Path) -> None:
    """Each run is its own section (header, exits, end); a file that does not build writes nothing."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\ndescription: d\nguest: {mode: long64, asm: 'bogus insn'}\n")
    pio = tmp_path / "pio.yaml"
    pio.write_text("name: pio\ndescription: d\n"
                   f"guest: {{source: {REPO / 'guests' / 'pio_loop.S'}, mode: long64, "
                   "defsym: {PIO_LOOP_COUNT: 3}}\n")
    out = tmp_path / "exits.jsonl"
    status, docs = _run_cli(capsys, "--exits-jsonl", str(out), str(pio), str(broken), str(scenario_file))
    assert status == 2 and [d["scenario"] for d in docs] == ["pio", "broken", "mmio-rw-loop"]
    assert docs[1]["error"]["kind"] == "input"     # it does not assemble: no run, no section
    runs = read_exit_stream(out.read_text().splitlines())
    assert [(h["scenario"], len(e), end["userspace_count"]) for h, e, end in runs] == \
        [("pio", 4, 4), ("mmio-rw-loop", 2 * LOOPS + 1, 2 * LOOPS + 1)]
    assert [e.fields["data"] for e in runs[0][1]] == ["03", "02", "01", "00000000"]


def test_unwritable_path_is_bad_input(tmp_path: Path, capsys, scenario_file: Path) -> None:
    assert main(["run", "--exits-jsonl", str(tmp_path / "no" / "such" / "dir.jsonl"), str(scenario_file)]) == 2
    assert "--exits-jsonl: cannot write" in capsys.readouterr().err
