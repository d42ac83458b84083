"""`make fuzz-scenarios` (kvmsim/fuzz/scenarios.py, fuzz/mutate.py): mutants are a pure function of
(seed, index), every operator changes its input, hostile files are refused quickly with status 2, the
classification follows the issue's BUG rules, lost workers are BUGs, and a 50-file campaign has no BUG."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest
import yaml

from kvmsim.cli import main
from kvmsim.fuzz import mutate
from kvmsim.fuzz import scenarios as fs


def test_mutants_are_deterministic_and_seeded() -> None:
    assert mutate.mutant(1, 7) == mutate.mutant(1, 7)
    assert [mutate.mutant(1, i)[2] for i in range(5)] != [mutate.mutant(2, i)[2] for i in range(5)]
    base, ops, body = mutate.mutant(3, 11)
    assert base in dict(mutate.corpus()) and ops.split("+")[0] in mutate.OPS and body


@pytest.mark.parametrize("op", mutate.OPS)
def test_every_operator_changes_the_file(op: str) -> None:
    name, text = dict(mutate.corpus()) and mutate.corpus()[0]
    changed = 0
    for k in range(5):
        rng = random.Random(f"{op}:{k}")
        if op in mutate.TEXTUAL:
            out = mutate.TEXTUAL[op](rng, text.encode())
        else:
            data = yaml.safe_load(text)
            try:
                mutate.STRUCTURAL[op](rng, data)
            except (IndexError, KeyError, TypeError, AttributeError, ValueError):
                continue
            out = mutate.dump(data)
        changed += out != text.encode() and out != mutate.dump(yaml.safe_load(text))
    assert changed >= 3, f"{op} left {name} as it was in {5 - changed} of 5 tries"


HOSTILE = ["alias-bomb", "deep-nesting", "nul-control", "non-utf8", "huge"]


@pytest.mark.parametrize("op", HOSTILE)
def test_hostile_mutants_are_refused_fast(op: str, tmp_path: Path, capsys) -> None:
    """Hostile inputs end in status 2 (bad input) with the file named, in seconds, for several shapes each."""
    name, text = mutate.corpus()[0]
    for k in range(4):
        body = mutate.TEXTUAL[op](random.Random(f"hostile:{op}:{k}"), text.encode())
        f = tmp_path / f"{op}-{k}.yaml"
        f.write_bytes(body)
        t0 = time.monotonic()
        status = main(["check", str(f)])
        err = capsys.readouterr().err
        assert time.monotonic() - t0 < 10
        assert status in (0, 2), err                  # some shapes stay valid YAML (e.g. a short alias)
        if status == 2:
            assert err.startswith(f"{f}"), err
            assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize("check,run,label", [
    (3, 2, "BUG status 3 from check"), (0, 3, "BUG status 3 from run"), (2, 3, "BUG status 3 from run"),
    (0, 2, "BUG check ok, run rejects"), (2, 0, "BUG check rejects, run runs"), (0, 141, "BUG unexpected status"),
    (2, 2, "rejected (status 2)"), (0, 0, "ran, status 0"), (0, 1, "ran, status 1"),
])
def test_classify(check: int, run: int, label: str) -> None:
    kind, got, _ = fs.classify(check, run, (10, "x: error: y"), (10, "x: error: y"))
    assert got == label and (kind == fs.BUG) == label.startswith("BUG")


def test_output_over_the_bound_is_a_bug() -> None:
    kind, label, detail = fs.classify(0, 0, (10, ""), (fs.OUTPUT_BOUND + 1, "..."))
    assert kind == fs.BUG and label == "BUG output over bound" and "run printed" in detail


FAKE_WORKER = r"""
import json, os, sys, time
start, count = int(sys.argv[1]), int(sys.argv[2])
for i in range(start, start + count):
    print(json.dumps({"start": i}), flush=True)
    if i == 1:
        time.sleep(60)
    if i == 2:
        os._exit(9)
    print(json.dumps({"index": i, "base": "b.yaml", "ops": "delete", "check": 2, "run": 2, "out_bytes": 5,
                      "kind": "rejected", "label": "rejected (status 2)", "detail": ""}), flush=True)
"""


def test_hung_and_crashed_workers_are_bugs_and_the_campaign_goes_on(monkeypatch) -> None:
    monkeypatch.setattr(fs, "worker_command", lambda seed, s, e, d: [sys.executable, "-c", FAKE_WORKER, str(s),
                                                                       str(e - s)])
    res = fs.campaign(5, seed=4, jobs=1, hang_after=1.0)
    assert [(r.index, r.label) for r in res] == [
        (0, "rejected (status 2)"), (1, "BUG hang"), (2, "BUG crash"), (3, "rejected (status 2)"),
        (4, "rejected (status 2)")]
    assert "exited with status 9 during this file" in res[2].detail
    assert res[1].base == mutate.mutant(4, 1)[0]   # a lost file is still named by its seed and index
    text = "\n".join(fs.summary(res, 4, 1.0, 1))
    assert "BUGs 2" in text and "--replay 4:1" in text and "--replay 4:2" in text


def test_small_campaign_has_no_bug(tmp_path: Path) -> None:
    """The make-test-sized campaign: 50 mutants of seed 1, each through check and run in workers."""
    res = fs.campaign(50, seed=1, jobs=2, directory=tmp_path)
    assert [r.index for r in res] == list(range(50))
    bugs = [f"#{r.index} [{r.ops}] {r.label}: {r.detail}" for r in res if r.kind == fs.BUG]
    assert not bugs, "\n".join(bugs)
    assert {r.kind for r in res} == {fs.REJECTED, fs.RAN}     # both kinds exercised
    assert not list(tmp_path.glob("*.yaml"))                   # only BUG files are kept


def test_replay_runs_the_real_cli(tmp_path: Path, capsys) -> None:
    assert fs.main(["--replay", "1:0", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "$ kvmsim check" in out and "$ kvmsim run" in out and "outcome: " in out
    assert (tmp_path / "s1-00000.yaml").is_file()


def test_json_problem() -> None:
    assert fs.json_problem(0, 0, b'{"scenario": "x", "passed": true}') == ""
    assert fs.json_problem(2, 2, b'{"scenario": null, "file": "f", "error": {"kind": "input"}}') == ""
    assert "not one JSON document" in fs.json_problem(1, 1, b"")
    assert "not one JSON document" in fs.json_problem(1, 1, b'{"a": 1}\n{"b": 2}')
    assert "status 3 with --json, 1 without" in fs.json_problem(3, 1, b"{}")
    assert "not a result or error object" in fs.json_problem(0, 0, b"[1, 2]")
