"""Scenario loading: every bad file gives file:line + the field, and `kvmsim check` exits 2 without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.errors import ScenarioError
from kvmsim.scenario.loader import format_error, load_scenario, load_scenarios
from kvmsim.scenario.schema import DebugExit, Serial16550

REPO = Path(__file__).resolve().parents[1]
BAD = REPO / "tests" / "data" / "bad_scenarios"

# (fixture, line, what the message must say)
BAD_CASES = [
    ("typo_field.yaml", 8, ["unknown field 'devics'", "did you mean 'devices'"]),
    ("wrong_type.yaml", 8, ["limits.max_exits", "'lots'"]),
    ("bad_enum.yaml", 6, ["field guest.mode", "'real16', 'prot32', 'long64' or 'reset'", "(got 'long65')"]),
    ("missing_guest_file.yaml", 6, ["guest.source", "does-not-exist.S", "not found"]),
    ("yaml_syntax.yaml", 5, ["YAML syntax error", "line 4"]),
    ("bad_device_type.yaml", 8, ["unknown field 'valuez' in devices[1]", "did you mean 'values'",
                                 ":9: error: field devices[2]: unknown type 'serial'"]),
]


@pytest.mark.parametrize("fixture,line,fragments", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_scenario_names_file_line_and_field(fixture: str, line: int, fragments: list[str]) -> None:
    with pytest.raises(ScenarioError) as exc:
        load_scenario(BAD / fixture)
    err = exc.value
    assert (Path(err.path).name, err.line) == (fixture, line)
    text = format_error(err)
    assert text.startswith(f"{err.path}:{line}: error: ")
    for frag in fragments:
        assert frag in text
    assert "Traceback" not in text and len(text.splitlines()) <= 10


@pytest.mark.parametrize("fixture,line,fragments", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_check_cli_in_process_exits_2(fixture: str, line: int, fragments: list[str], capsys) -> None:
    assert main(["check", str(BAD / fixture)]) == 2
    out = capsys.readouterr()
    both = out.out + out.err
    assert f"{fixture}:{line}: error:" in both
    assert "Traceback" not in both


def test_check_cli_subprocess_exits_2_without_traceback() -> None:
    env = {**os.environ, "KVMSIM_DEBUG": "0"}
    p = subprocess.run([sys.executable, "-m", "kvmsim", "check", str(BAD)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "Traceback" not in p.stdout + p.stderr
    for fixture, line, _ in BAD_CASES:
        assert f"{fixture}:{line}: error:" in p.stderr


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """\
name: good-one
description: Integers as YAML ints or strings, sizes with suffixes, defaults filled in.
guest:
  source: g.S
  mode: long64
  defsym: {MMIO_BASE: "0xd0000000"}
memory:
  - {gpa: 0, size: 2M}
  - {gpa: "0x40000000", size: 4K}
kvm:
  emulator: {version: 6.10}
  msrs: {0x10: "0x5"}
events:
  - {at: {exit: 3}, inject: nmi}
  - {at: {userspace_exit: 1}, inject: {irq: 0x20}}
expect:
  stop: {reason: debug-exit, code: 0}
  exits: {EPT_VIOLATION: 1, IO_INSTRUCTION: "5"}
  emulation: {PF: 1, NO_DECODE: 1, SKIP: 0, "0": 2, "PF|ALLOW_RETRY_PF": 0}
  userspace:
    - {mmio: {gpa: 0xd0000000, len: 4, write: false}}
    - hlt
    - {io: {port: 0x3f8, size: 1, direction: out, data: "68"}}
  regs: {rax: 0x1234, RIP: "0x1000"}
  memory: [{gpa: 0x2000, bytes: "34 12 00 00"}]
  devices: {serial16550: {tx_bytes: 3}}
"""


def test_good_scenario_values_defaults_and_lines(tmp_path: Path) -> None:
    (tmp_path / "g.S").write_text("hlt\n")
    sc = load_scenario(_write(tmp_path, GOOD))
    assert sc.path == tmp_path / "s.yaml"
    assert sc.guest.source_path == (tmp_path / "g.S").resolve()
    assert sc.guest.defsym == {"MMIO_BASE": 0xD0000000}
    assert [(m.gpa, m.size) for m in sc.memory] == [(0, 2 << 20), (0x40000000, 4096)]
    assert [type(d) for d in sc.devices] == [Serial16550, DebugExit]
    assert [(d.name, d.port) for d in sc.devices] == [("serial16550", 0x3F8), ("debug-exit", 0xF4)]
    assert sc.kvm.emulator.version == "6.10"       # not the float 6.1
    assert sc.kvm.msrs == {0x10: 5}
    assert sc.expect.exits == {"EPT_VIOLATION": 1, "IO_INSTRUCTION": 5}
    assert sc.expect.emulation == {"PF": 1, "NO_DECODE": 1, "SKIP": 0, "0": 2, "ALLOW_RETRY_PF|PF": 0}
    assert [u.kind for u in sc.expect.userspace] == ["mmio", "hlt", "io"]
    assert sc.expect.userspace[0].fields == {"gpa": 0xD0000000, "len": 4, "write": False}
    assert sc.expect.regs == {"rax": 0x1234, "rip": 0x1000}
    assert sc.expect.memory[0].bytes == "34120000"
    assert sc.backends == ["sim", "kvm"] and sc.limits.max_exits == 100_000
    assert sc.line_of("guest", "mode") == 5
    assert sc.line_of("expect", "userspace", 2) == 23
    assert sc.line_of("expect", "userspace", 2, "io", "nonexistent") == 23


def test_inline_asm_line_offset(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, "name: a\ndescription: b\nguest:\n  mode: long64\n  asm: |\n    nop\n    hlt\n"))
    assert sc.asm_line_offset() == 5          # assembler line 1 ("nop") is YAML line 6
    sc = load_scenario(_write(tmp_path, "name: a\ndescription: b\nguest: {mode: long64, asm: hlt}\n"))
    assert sc.asm_line_offset() == 2


def test_guest_source_resolves_repo_relative(tmp_path: Path) -> None:
    (tmp_path / "guests").mkdir()
    (tmp_path / "guests" / "x.S").write_text("hlt\n")
    (tmp_path / "scenarios").mkdir()
    p = _write(tmp_path / "scenarios", "name: r\ndescription: d\nguest: {source: guests/x.S, mode: real16}\n")
    assert load_scenario(p).guest.source_path == (tmp_path / "guests" / "x.S").resolve()


@pytest.mark.parametrize("text,line,fragment", [
    ("name: a\nname: b\n", 2, "duplicate key 'name' (first given at line 1)"),
    ("", 1, "empty"),
    ("- 1\n- 2\n", 1, "a scenario is a mapping"),
    ("name: a\ndescription: b\nguest: {asm: hlt, mode: long64}\nmemory: [{gpa: 0x1000, size: 3K}]\n", 4,
     "memory[0].size: memslot 0: KVM_SET_USER_MEMORY_REGION: memory_size 0xc00 is not a multiple of the page size (EINVAL)"),
    ("name: a\ndescription: b\nguest: {asm: hlt, mode: long64}\ndevices:\n  - {type: regbank, gpa: 0x1000}\n", 5,
     "inside RAM"),
    ("name: a\ndescription: b\nguest: {asm: hlt, source: x.S, mode: long64}\n", 3, "exactly one of 'source'"),
    ("name: a\ndescription: b\nguest: {asm: hlt, mode: long64}\nexpect:\n  userspace:\n    - {mmio: {}, hlt: {}}\n",
     6, "exactly one of: io, mmio"),
    ("name: a\ndescription: b\nguest: {asm: hlt, mode: long64}\nexpect:\n  emulation: {NODECODE: 1}\n", 5,
     "did you mean 'NO_DECODE'"),
    ("name: a\ndescription: b\nguest: {asm: hlt, mode: long64}\nexpect:\n  regs: {rbxx: 1}\n", 5,
     "unknown register 'rbxx' (did you mean 'rbx'?)"),
    ("name: a\ndescription: b\nguest: {asm: hlt, mode: long64}\nexpect:\n  devices: {uart: {x: 1}}\n", 5,
     "no device named 'uart'"),
    ("name: a\ndescription: b\nguest: {asm: hlt, mode: long64}\nevents:\n  - {at: {exit: 1}, inject: {irq: 300}}\n",
     5, "events[0].inject.irq"),
    ("name: a\ndescription: b\nguest:\n  asm: hlt\n", 3, "field guest.mode: required field missing"),
])
def test_more_bad_input(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        load_scenario(_write(tmp_path, text))
    assert exc.value.line == line
    assert fragment in exc.value.msg


def test_missing_file_and_directory_expansion(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such file or directory"):
        load_scenario(tmp_path / "nope.yaml")
    _write(tmp_path, "name: b\ndescription: d\nguest: {asm: hlt, mode: long64}\n", "b.yaml")
    _write(tmp_path, "name: a\ndescription: d\nguest: {asm: hlt, mode: long64}\n", "a.yaml")
    assert [s.name for s in load_scenarios([tmp_path])] == ["a", "b"]


def test_check_ok_and_list(tmp_path: Path, capsys) -> None:
    _write(tmp_path, "name: fine\ndescription: A fine one.\nguest: {asm: hlt, mode: prot32}\n", "fine.yaml")
    assert main(["check", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "ok: fine\n"
    assert main(["list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fine" in out and "A fine one." in out and "prot32" in out


def test_cli_usage_errors_and_internal_errors(tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["run", "--guest", str(tmp_path / "x.S")]) == 2
    assert "--mode" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    capsys.readouterr()
    monkeypatch.delenv("KVMSIM_DEBUG", raising=False)
    import kvmsim.cli as cli
    monkeypatch.setattr(cli, "cmd_schema", lambda args: 1 // 0)
    assert main(["schema"]) == 3
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError" in err and "KVMSIM_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("KVMSIM_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["schema"])


def test_schema_command_prints_json_schema(capsys) -> None:
    import json
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Scenario" and schema["additionalProperties"] is False
    assert {"name", "guest", "devices", "expect"} <= set(schema["properties"])
