"""The exit log is bounded: the first and last N userspace exits are kept, the count stays exact,
and reports and JSON say how many were left out.  Each bounded run is compared with the same run
keeping every exit (the kept records must be exactly that stream's head and tail)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.report import userspace_lines
from kvmsim.scenario.guest_build import binutils_available
from kvmsim.scenario.result import RunResult
from kvmsim.scenario.runner import DEFAULT_KEEP_EXITS, keep_exits_for, run_scenario
from kvmsim.scenario.schema import Scenario

pytestmark = pytest.mark.skipif(not binutils_available(), reason="needs GNU binutils")
REPO = Path(__file__).resolve().parents[1]
LOOPS = 2500   # OUTs to port 0x80, then the EXIT write: LOOPS + 1 userspace exits


def _pio_loop(n: int = LOOPS, **extra) -> Scenario:
    spec = {"name": "pio-loop", "description": "exit log bound",
            "guest": {"source": str(REPO / "guests" / "pio_loop.S"), "mode": "long64",
                      "defsym": {"PIO_LOOP_COUNT": n}}, **extra}
    return Scenario.model_validate(spec)


@pytest.fixture(scope="module")
def full() -> RunResult:
    return run_scenario(_pio_loop(), keep_exits=None)


def test_full_log_keeps_every_exit(full: RunResult) -> None:
    assert full.stop.reason == "debug-exit"
    assert len(full.userspace) == LOOPS + 1 and full.userspace_omitted == 0
    assert full.userspace[0].fields["port"] == 0x80 and full.userspace[-1].fields["port"] == 0xF4


@pytest.mark.parametrize("keep", [0, 1, 10, 999])
def test_bounded_log_is_the_head_and_tail_of_the_full_one(full: RunResult, keep: int) -> None:
    res = run_scenario(_pio_loop(), keep_exits=keep)
    assert res.userspace_count == full.userspace_count == LOOPS + 1
    assert res.userspace_omitted == LOOPS + 1 - 2 * keep
    assert res.userspace_omitted_at == keep
    assert res.userspace == full.userspace[:keep] + (full.userspace[-keep:] if keep else [])
    assert res.regs == full.regs and res.exits == full.exits   # the run itself is the same


def test_default_bound_and_its_exceptions() -> None:
    assert keep_exits_for(_pio_loop()) == DEFAULT_KEEP_EXITS
    expecting = _pio_loop(expect={"userspace": [{"io": {"port": 0x80}}], "userspace_mode": "prefix"})
    assert keep_exits_for(expecting) is None     # its check compares the stream
    res = run_scenario(expecting)
    assert len(res.userspace) == LOOPS + 1 and res.userspace_omitted == 0


def test_json_and_report_mark_the_gap(full: RunResult) -> None:
    res = run_scenario(_pio_loop(), keep_exits=3)
    d = res.to_dict()
    assert d["userspace_count"] == LOOPS + 1
    assert d["userspace"][3] == {"omitted": LOOPS + 1 - 6} and len(d["userspace"]) == 7
    back = RunResult.from_json(res.to_json())
    assert back.userspace == res.userspace and back.userspace_omitted == res.userspace_omitted
    lines = userspace_lines(res)
    assert lines[3] == f"… {LOOPS + 1 - 6} exits omitted"
    assert lines[4].startswith(f"#{LOOPS - 1} ") and lines[-1].startswith(f"#{LOOPS + 1} KVM_EXIT_IO")
    assert lines[-1].endswith(full.userspace[-1].describe())


def _yaml(tmp_path: Path) -> Path:
    p = tmp_path / "loop.yaml"
    p.write_text("name: loop\ndescription: d\n"
                 f"guest: {{source: {REPO / 'guests' / 'pio_loop.S'}, mode: long64, "
                 f"defsym: {{PIO_LOOP_COUNT: {LOOPS}}}}}\n")
    return p


def test_cli_keep_exits(tmp_path: Path, capsys) -> None:
    f = str(_yaml(tmp_path))
    assert main(["run", "--json", f]) == 0
    doc = json.loads(capsys.readouterr().out)["result"]
    assert doc["userspace_count"] == LOOPS + 1
    assert len(doc["userspace"]) == 2 * DEFAULT_KEEP_EXITS + 1
    assert doc["userspace"][DEFAULT_KEEP_EXITS] == {"omitted": LOOPS + 1 - 2 * DEFAULT_KEEP_EXITS}
    assert main(["run", "--json", "--keep-exits", "all", f]) == 0
    doc = json.loads(capsys.readouterr().out)["result"]
    assert len(doc["userspace"]) == doc["userspace_count"] == LOOPS + 1
    assert main(["run", "--keep-exits", "2", f]) == 0
    out = capsys.readouterr().out
    assert f"userspace exits ({LOOPS + 1}):" in out and f"… {LOOPS + 1 - 4} exits omitted" in out
    assert main(["run", "--keep-exits", "lots", f]) == 2
    assert "--keep-exits: expected a number or 'all'" in capsys.readouterr().err


def test_diff_compares_whole_streams(monkeypatch) -> None:
    import kvmsim.scenario.runner as runner
    from kvmsim.scenario.differential import diff_scenario

    seen: list[dict] = []

    class Done(Exception):
        pass

    def spy(sc, **kw):
        seen.append(kw)
        raise Done

    monkeypatch.setattr(runner, "run_scenario", spy)
    with pytest.raises(Done):
        diff_scenario(_pio_loop(), "kvm_intel")
    assert seen and seen[0]["keep_exits"] is None


def test_regbank_access_log_is_bounded() -> None:
    from kvmsim.vmm.devices.simple import RegBank

    bank = RegBank(values={0: 0x1234})
    for i in range(RegBank.LOG_LIMIT + 500):
        assert bank.io_read(0, 4) == bytes.fromhex("34120000")
        bank.io_write(4, bytes([i & 0xFF]))
    assert bank.counters["reads"] == bank.counters["writes"] == RegBank.LOG_LIMIT + 500
    assert len(bank.log) == RegBank.LOG_LIMIT
    assert bank.log[:3] == [("r", 0, bytes.fromhex("34120000")), ("w", 4, b"\0"), ("r", 0, bytes.fromhex("34120000"))]
