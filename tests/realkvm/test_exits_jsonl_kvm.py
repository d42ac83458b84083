"""`run --exits-jsonl` on /dev/kvm: the same Vmm loop streams the real kernel's exits, and for an MMIO
read/write loop the stream equals the simulation's, line for line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.result import read_exit_stream

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kvm
def test_kvm_stream_equals_sim_stream(tmp_path: Path, capsys, binutils) -> None:
    scenario = tmp_path / "rw.yaml"
    scenario.write_text("""name: rw
description: MMIO reads and writes, then EXIT
guest:
  mode: long64
  asm: |
    .include "kvmsim.inc"
    .globl _start
    _start:
        movl $0xd0000000, %ebx
        movl $300, %ecx
    1:  movl (%rbx), %eax
        movl %ecx, 4(%rbx)
        decl %ecx
        jnz 1b
        EXIT 0
devices:
  - {type: debug-exit, port: 0xf4}
  - {type: regbank, gpa: 0xd0000000, size: 0x1000, values: {0x0: 0x1234}}
""")
    runs = {}
    for backend in ("sim", "kvm"):
        out = tmp_path / f"{backend}.jsonl"
        assert main(["run", "--backend", backend, "--keep-exits", "5", "--exits-jsonl", str(out), str(scenario)]) == 0
        [(header, exits, end)] = read_exit_stream(out.read_text().splitlines())
        assert header["backend"] == backend and end["userspace_count"] == len(exits) == 601
        runs[backend] = exits
    capsys.readouterr()
    assert runs["kvm"] == runs["sim"]
