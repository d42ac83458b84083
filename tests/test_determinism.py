"""Same scenario, same output: `run --json` (minus wall_seconds) and `--trace` lines are byte-identical
across runs in one process and across processes with different hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmsim.cli import main

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ["port-in", "serial-hello-real16", "msr-userspace", "hypercall"]


def _strip_wall(doc: dict) -> dict:
    doc["result"].pop("wall_seconds")
    return doc


def run_json(capsys, name: str, *extra: str) -> str:
    assert main(["run", "--json", *extra, str(REPO / "scenarios" / f"{name}.yaml")]) == 0
    return json.dumps(_strip_wall(json.loads(capsys.readouterr().out)), indent=2, sort_keys=False)


@pytest.mark.parametrize("name", SCENARIOS)
def test_run_json_is_identical_twice(capsys, name: str) -> None:
    assert run_json(capsys, name) == run_json(capsys, name)


@pytest.mark.parametrize("name", SCENARIOS)
def test_trace_lines_are_identical_twice(capsys, name: str) -> None:
    first, second = (json.loads(run_json(capsys, name, "--trace")) for _ in range(2))
    trace = first["result"]["trace"]
    assert any(line.lstrip().startswith("kvm_exit: ") for line in trace)
    assert any(line.lstrip().startswith("kvm_userspace_exit: ") for line in trace)
    assert trace == second["result"]["trace"]
    assert first == second


def _subprocess_json(name: str, seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env.pop("KVMSIM_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "kvmsim", "run", "--json", "--trace",
                        f"scenarios/{name}.yaml"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return json.dumps(_strip_wall(json.loads(p.stdout)), indent=2)


@pytest.mark.parametrize("name", ["port-in", "serial-hello-real16"])
def test_trace_is_identical_across_processes_and_hash_seeds(name: str) -> None:
    assert _subprocess_json(name, "1") == _subprocess_json(name, "4242")
