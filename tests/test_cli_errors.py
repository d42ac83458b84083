"""The CLI on bad input (file:line, exit 2, no traceback) and its machine-readable outputs
(`run --json`, `run --guest`, `schema`, `list`), in process and once as the installed script."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvmsim.cli import main

REPO = Path(__file__).resolve().parents[1]
KVMSIM = REPO / ".venv" / "bin" / "kvmsim"


@dataclass(frozen=True)
class BadInput:
    descr: str
    files: dict[str, str]          # name -> text, written into tmp_path; the first is the scenario
    where: str                     # "<file>:<line>" that must start an error line
    fragments: tuple[str, ...]     # more text the message must contain


BAD_INPUTS = [
    BadInput("typo'd field", {"s.yaml": """\
name: typo
description: a misspelled key
guest: {asm: hlt, mode: long64}
limits: {max_exits: 10}
expct:
  stop: {reason: hlt}
"""}, "s.yaml:5", ("unknown field 'expct'", "did you mean 'expect'")),
    BadInput("wrong type", {"s.yaml": """\
name: wrong-type
description: a string where an integer goes
guest: {asm: hlt, mode: long64}
limits:
  max_exits: lots
"""}, "s.yaml:5", ("limits.max_exits", "'lots'")),
    BadInput("wrong mode", {"s.yaml": """\
name: wrong-mode
description: an enum value that does not exist
guest:
  asm: hlt
  mode: long32
"""}, "s.yaml:5", ("guest.mode", "long32")),
    BadInput("missing guest file", {"s.yaml": """\
name: missing-guest
description: the source file is not there
guest:
  source: no-such-guest.S
  mode: long64
"""}, "s.yaml:4", ("guest.source", "no-such-guest.S", "not found")),
    BadInput("inline asm error", {"s.yaml": """\
name: asm-error
description: the assembler rejects line 4 of the inline text (YAML line 9)
guest:
  mode: long64
  asm: |
    .text
    .globl _start
    _start:
        bogus_insn %eax
        hlt
"""}, "s.yaml:9", ("s.yaml:9: Error: no such instruction", "bogus_insn")),
    BadInput("source asm error", {"s.yaml": """\
name: src-asm-error
description: the guest file has an error on its line 5
guest: {source: bad_guest.S, mode: prot32}
""", "bad_guest.S": """\
        .text
        .globl _start
_start:
        nop
        movl    %eax
        hlt
"""}, "bad_guest.S:5", ("bad_guest.S:5: Error: number of operands mismatch",)),
]


def write_files(tmp_path: Path, case: BadInput) -> Path:
    for name, text in case.files.items():
        (tmp_path / name).write_text(text)
    return tmp_path / next(iter(case.files))


def assert_one_screen_error(text: str, case: BadInput) -> None:
    assert "Traceback" not in text
    assert any(line.split(": ")[0].endswith(case.where) for line in text.splitlines()), text
    for frag in case.fragments:
        assert frag in text, frag
    assert len(text.splitlines()) <= 20


# `check` validates the YAML only (the guest is assembled by `run`), so it skips the asm cases.
IN_PROCESS = [(cmd, c) for cmd in ("run", "check") for c in BAD_INPUTS
              if not (cmd == "check" and "asm error" in c.descr)]


@pytest.mark.parametrize("command,case", IN_PROCESS, ids=[f"{cmd}-{c.descr}" for cmd, c in IN_PROCESS])
def test_bad_input_in_process(case: BadInput, command: str, tmp_path: Path, capsys) -> None:
    yaml_path = write_files(tmp_path, case)
    assert main([command, str(yaml_path)]) == 2
    out = capsys.readouterr()
    assert_one_screen_error(out.out + out.err, case)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.descr)
def test_bad_input_via_installed_script(case: BadInput, tmp_path: Path) -> None:
    if not KVMSIM.exists():
        pytest.skip(f"{KVMSIM} not installed (make test creates it)")
    yaml_path = write_files(tmp_path, case)
    env = {k: v for k, v in os.environ.items() if k != "KVMSIM_DEBUG"}
    p = subprocess.run([str(KVMSIM), "run", str(yaml_path)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert_one_screen_error(p.stdout + p.stderr, case)


def test_guest_asm_error_with_run_guest(tmp_path: Path, capsys) -> None:
    src = tmp_path / "broken.S"
    src.write_text(".text\n.globl _start\n_start:\n  movq %rax\n  hlt\n")
    assert main(["run", "--guest", str(src), "--mode", "long64"]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"{src}:4: Error: " in text and "Traceback" not in text


def test_run_guest_without_mode_is_a_usage_error(tmp_path: Path, capsys) -> None:
    src = tmp_path / "g.S"
    src.write_text(".text\n.globl _start\n_start:\n  hlt\n")
    assert main(["run", "--guest", str(src)]) == 2
    out = capsys.readouterr()
    assert "--mode" in out.err and "Traceback" not in out.out + out.err


# ---------------------------------------------------------------- machine-readable output

HELLO = """\
        .include "kvmsim.inc"
        GUEST_ENTRY
        SERIAL_PRINT "hi from the guest\\n"
        movl    $0x1234, %ebx
        EXIT    7
"""


def test_run_guest_with_default_devices(tmp_path: Path, capsys) -> None:
    """`run --guest FILE.S --mode long64`: serial at 0x3f8 and debug-exit at 0xf4 are there;
    the guest's own `EXIT 7` makes the run fail (status 1), as any non-zero debug-exit code does."""
    src = tmp_path / "hello.S"
    src.write_text(HELLO)
    assert main(["run", "--json", "--guest", str(src), "--mode", "long64"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False and doc["checks"][0]["name"] == "stop (implicit)"
    res = doc["result"]
    assert res["serial"] == "hi from the guest\n"
    assert res["stop"] == {"reason": "debug-exit", "code": 7, "suberror": None, "detail": ""}
    assert res["regs"]["rbx"] == 0x1234


def test_run_json_parses_and_has_the_whole_result(capsys) -> None:
    assert main(["run", "--json", str(REPO / "scenarios" / "port-in.yaml")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scenario"] == "port-in" and doc["passed"] is True
    res = doc["result"]
    for key in ("stop", "userspace", "regs", "serial", "exits"):
        assert key in res, key
    assert res["stop"]["reason"] == "debug-exit"
    first = res["userspace"][0]
    assert first == {"reason": "IO", "fields": {"direction": 0, "size": 1, "port": 0x60, "count": 1, "data": "78"}}
    assert res["regs"]["rdi"] == 0x12345678
    assert res["serial"].endswith("SUMMARY: 3 tests, 0 failures\n")
    assert res["exits"]["IO_INSTRUCTION"] >= 4
    assert all(c["passed"] for c in doc["checks"])


def test_schema_is_a_json_schema_for_scenarios(capsys) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["type"] == "object"
    assert {"name", "description", "guest"} <= set(schema["required"])
    assert {"guest", "devices", "kvm", "expect", "limits"} <= set(schema["properties"])
    assert schema.get("additionalProperties") is False
    refs = set(re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(schema)))
    assert refs and refs <= set(schema["$defs"])      # every reference resolves


def test_list_shows_each_scenario_with_its_description(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    for i in range(2):
        (tmp_path / f"s{i}.yaml").write_text(
            f"name: listed-{i}\ndescription: Scenario number {i} for the list test.\n"
            "guest: {asm: hlt, mode: real16}\n")
    assert main(["list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for i in range(2):
        row = next(line for line in out.splitlines() if f"listed-{i}" in line)
        assert f"s{i}.yaml" in row and "real16" in row and f"Scenario number {i} for the list test." in row


def test_list_reports_a_broken_scenario_and_exits_2(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    (tmp_path / "ok.yaml").write_text("name: fine\ndescription: d\nguest: {asm: hlt, mode: real16}\n")
    (tmp_path / "bad.yaml").write_text("name: broken\ndescription: d\nguest: {asm: hlt, mode: real16}\nfoo: 1\n")
    assert main(["list", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "fine" in out.out and "line 4" in out.out and "Traceback" not in out.out + out.err
