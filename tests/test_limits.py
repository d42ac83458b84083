"""limits: max_guest_insns counts retired guest instructions exactly and stops deterministically;
every limit stop names the limit and how to raise it; guest_insns is in the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.schema import DEFAULT_MAX_GUEST_INSNS
from kvmsim.scenario.runner import make_machine, run_machine, run_scenario

LOOP = """
name: insn-loop
description: limits test
guest:
  mode: {mode}
  asm: |
    xor %eax, %eax
    1: inc %eax
    jmp 1b
limits: {{max_guest_insns: {n}, wall_seconds: 60}}
"""

# A loop with a VM exit (OUT), instructions the silicon completes itself (MOV from CR0 through the
# read shadow; MOV from/to CR3, stepped in unicorn with no CR3 exiting) and plain ones.
MIXED = """
name: insn-mixed
description: limits test
guest:
  mode: long64
  asm: |
    xor %ecx, %ecx
    1: inc %ecx
    mov %cr0, %rax
    mov %cr3, %rax
    mov %rax, %cr3
    out %al, $0x80
    jmp 1b
limits: {{max_guest_insns: {n}, wall_seconds: 60}}
"""


def _run(text: str, tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return run_scenario(load_scenario(f))


@pytest.mark.parametrize("mode", ["real16", "prot32", "long64"])
@pytest.mark.parametrize("n", [1, 2, 1001, 250_000])
def test_loop_stops_at_exactly_n_instructions(tmp_path: Path, mode: str, n: int) -> None:
    res = _run(LOOP.format(mode=mode, n=n), tmp_path)
    assert res.stop.reason == "limit"
    assert res.stop.detail == f"max_guest_insns {n} reached (raise limits.max_guest_insns or --max-insns)"
    assert res.guest_insns == n
    # xor, then (inc, jmp) pairs: after n instructions eax counts the incs that ran.
    assert res.regs["rax"] & 0xFFFF_FFFF == n // 2


def test_same_registers_on_three_runs(tmp_path: Path) -> None:
    results = [_run(MIXED.format(n=40_001), tmp_path) for _ in range(3)]
    assert {r.guest_insns for r in results} == {40_001}
    assert all(r.stop.reason == "limit" for r in results)
    assert results[0].regs == results[1].regs == results[2].regs
    assert [e.kname for e in results[0].userspace] == [e.kname for e in results[2].userspace]


def test_exiting_and_stepped_instructions(tmp_path: Path) -> None:
    """Per iteration inc, the three CR moves, the OUT and jmp retire: the OUT exits to userspace and
    KVM completes it, which counts it retired as kvm_skip_emulated_instruction does."""
    res = _run(MIXED.format(n=1 + 6 * 100), tmp_path)
    assert res.guest_insns == 601
    assert res.regs["rcx"] == 100 and len(res.userspace) == 100


@pytest.mark.parametrize("mode", ["real16", "prot32", "long64"])
def test_straight_line_code_across_pages_counts_every_instruction(tmp_path: Path, mode: str) -> None:
    """10,000 NOPs over three pages, then OUT and HLT: a page's first block stops the silicon
    between instructions (its scan), and no instruction may go uncounted there."""
    text = f"""
name: insn-pages
description: limits test
guest:
  mode: {mode}
  asm: |
    .rept 10000
    nop
    .endr
    out %al, $0x80
    hlt
"""
    res = _run(text, tmp_path)
    assert res.stop.reason == "hlt" and len(res.userspace) == 2
    assert res.guest_insns == 10_002


def test_guest_insns_reported_when_the_guest_ends_itself(tmp_path: Path) -> None:
    text = """
name: ends
description: limits test
guest:
  mode: long64
  asm: |
    mov $5, %ecx
    1: dec %ecx
    jnz 1b
    hlt
"""
    res = _run(text, tmp_path)      # the default limit: counted
    assert res.stop.reason == "hlt"
    assert res.guest_insns == 1 + 2 * 5 + 1     # and the HLT, which KVM skips (retired)


def test_no_limit_counts_nothing(tmp_path: Path) -> None:
    """With max_guest_insns: null unicorn runs with no count hook (native speed): nothing counted."""
    f = tmp_path / "s.yaml"
    f.write_text(LOOP.format(mode="long64", n=5).replace("max_guest_insns: 5, ", "max_guest_insns: null, max_exits: 3, ")
                 .replace("jmp 1b", "out %al, $0x80\n    jmp 1b"))
    m = make_machine(load_scenario(f))
    try:
        res = run_machine(m)
        assert res.stop.detail.startswith("max_exits 3 reached") and res.guest_insns is None
        assert m.vcpu.vcpu.hw._counter.value == 0     # unicorn's count hook never ran
    finally:
        m.close()


def test_max_exits_detail_says_how_to_raise_it(tmp_path: Path) -> None:
    text = MIXED.format(n=10**9).replace("wall_seconds: 60", "wall_seconds: 60, max_exits: 7")
    res = _run(text, tmp_path)
    assert res.stop.detail == "max_exits 7 reached (raise limits.max_exits or --max-exits)"
    assert len(res.userspace) == 7


BAD_LIMITS = [("wall_seconds: .inf", "limits.wall_seconds", "finite number"),
              ("wall_seconds: .nan", "limits.wall_seconds", "finite number"),
              ("wall_seconds: 1e20", "limits.wall_seconds", "less than or equal to 1000000"),
              ("wall_seconds: 0", "limits.wall_seconds", "greater than 0"),
              ("max_exits: 0", "limits.max_exits", "greater than 0"),
              ("max_exits: 0x10000000000000000", "limits.max_exits", "less than or equal to"),
              ("max_guest_insns: -5", "limits.max_guest_insns", "greater than 0"),
              ("max_guest_insns: 99999999999999999999", "limits.max_guest_insns", "less than or equal to")]


@pytest.mark.parametrize("line,field,why", BAD_LIMITS)
def test_bad_limits_are_file_line_errors(tmp_path: Path, capsys, line: str, field: str, why: str) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(f"name: t\ndescription: d\nguest: {{asm: hlt, mode: long64}}\nlimits: {{{line}}}\n")
    for cmd in ("check", "run"):
        assert main([cmd, str(f)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{f}:4: error: field {field}: ") and why in err, err


@pytest.mark.parametrize("flag,value,why", [("--timeout", "inf", "finite number"), ("--timeout", "-1", "greater than 0"),
                                            ("--max-exits", "0", "greater than 0"), ("--max-insns", "x", "integer")])
def test_bad_limit_flags_are_usage_errors(tmp_path: Path, capsys, flag: str, value: str, why: str) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(LOOP.format(mode="long64", n=10))
    assert main(["run", flag, value, str(f)]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and why in err, err


def test_limit_flags_override_the_scenario(tmp_path: Path, capsys) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(MIXED.format(n=1_000_000))
    main(["run", "--json", "--max-insns", "0x15", str(f)])
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"]["guest_insns"] == 21 and doc["result"]["stop"]["detail"].startswith("max_guest_insns 21 ")
    main(["run", "--json", "--max-exits", "3", str(f)])
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["result"]["userspace"]) == 3 and doc["result"]["stop"]["detail"].startswith("max_exits 3 ")
    f.write_text(LOOP.format(mode="long64", n=10**15).replace("max_guest_insns: 1000000000000000, ", ""))
    main(["run", "--json", "--timeout", "0.2", str(f)])
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"]["stop"]["detail"] == "wall_seconds 0.2 reached (raise limits.wall_seconds or --timeout)"
    assert doc["result"]["wall_seconds"] < 5


def test_default_limit_stops_a_runaway_guest_by_instruction_count(tmp_path: Path) -> None:
    text = LOOP.format(mode="long64", n=1).replace("limits: {max_guest_insns: 1, wall_seconds: 60}\n", "")
    assert "limits:" not in text
    res = _run(text, tmp_path)
    assert res.stop.detail == f"max_guest_insns {DEFAULT_MAX_GUEST_INSNS} reached (raise limits.max_guest_insns or --max-insns)"
    assert res.guest_insns == DEFAULT_MAX_GUEST_INSNS and res.regs["rax"] == DEFAULT_MAX_GUEST_INSNS // 2


def test_max_insns_off_runs_uncounted(tmp_path: Path, capsys) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(MIXED.format(n=5))
    main(["run", "--json", "--max-insns", "off", "--max-exits", "4", str(f)])
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"]["guest_insns"] is None and doc["result"]["stop"]["detail"].startswith("max_exits 4 ")


def test_same_registers_in_another_process(tmp_path: Path, capsys) -> None:
    """The stop point depends on nothing in the process (hash seed, warm translations, host speed)."""
    import os
    import subprocess
    import sys

    f = tmp_path / "s.yaml"
    f.write_text(MIXED.format(n=30_011))
    main(["run", "--json", str(f)])
    here = json.loads(capsys.readouterr().out)["result"]
    p = subprocess.run([sys.executable, "-m", "kvmsim", "run", "--json", str(f)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": "7"}, timeout=120)
    there = json.loads(p.stdout)["result"]
    assert here["guest_insns"] == there["guest_insns"] == 30_011
    assert here["regs"] == there["regs"] and here["userspace"] == there["userspace"]
