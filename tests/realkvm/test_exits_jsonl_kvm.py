"""`run --exits-jsonl` on /dev/kvm: the same Vmm loop streams the real kernel's exits, and for an MMIO
read/write loop the stream equals the simulation's, line for line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.result import read_exit_stream
from mmio_rw import mmio_rw_text

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kvm
def test_kvm_stream_equals_sim_stream(tmp_path: Path, capsys, binutils) -> None:
    scenario = tmp_path / "rw.yaml"
    scenario.write_text(mmio_rw_text(300))
    runs = {}
    for backend in ("sim", "kvm"):
        out = tmp_path / f"{backend}.jsonl"
        assert main(["run", "--backend", backend, "--keep-exits", "5", "--exits-jsonl", str(out), str(scenario)]) == 0
        [(header, exits, end)] = read_exit_stream(out.read_text().splitlines())
        assert header["backend"] == backend and end["userspace_count"] == len(exits) == 601
        runs[backend] = exits
    capsys.readouterr()
    assert runs["kvm"] == runs["sim"]
