"""Expectation checks, RunResult JSON, sim/kvm diffs and the CLI/pytest reporting, on hand-built results."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.expect import check
from kvmsim.scenario.result import RunResult, diff_results
from kvmsim.scenario.schema import Scenario
from kvmsim.vmm.exits import Stop, UserspaceExit

REPO = Path(__file__).resolve().parents[1]


def scenario(expect: dict, **extra) -> Scenario:
    return Scenario.model_validate({"name": "t", "description": "d", "guest": {"asm": "hlt", "mode": "long64"},
                                    "devices": [{"type": "serial16550"}, {"type": "debug-exit"},
                                                {"type": "regbank", "gpa": 0xD0000000}],
                                    "expect": expect, **extra})


def io(port: int, data: str, direction: int = 1) -> UserspaceExit:
    return UserspaceExit("IO", {"direction": direction, "size": len(data) // 2, "port": port, "count": 1, "data": data})


def mmio(gpa: int, data: str, is_write: int = 0) -> UserspaceExit:
    return UserspaceExit("MMIO", {"phys_addr": gpa, "len": len(data) // 2, "is_write": is_write, "data": data})


def result(**kw) -> RunResult:
    base = dict(scenario="t", backend="sim", stop=Stop("debug-exit", code=0),
                exits={"EPT_VIOLATION": 1, "EPT_MISCONFIG": 2, "IO_INSTRUCTION": 4},
                userspace=[mmio(0xD0000000, "34120000"), io(0x3F8, "6f"), io(0x3F8, "6b"), io(0x3F8, "0a"),
                           io(0xF4, "00000000")],
                emulation={"PF": 3, "NO_DECODE": 3, "ALLOW_RETRY_PF|PF": 1},
                serial="ok\n", regs={"rax": 0x1234, "rip": 0x1010}, sregs={"cr0": 0x11},
                devices={"regbank": {"reads": 1}}, exceptions=[{"vector": 6}],
                memory=[{"gpa": 0x2000, "bytes": "3412000078563412"}], guest_insns=42)
    base.update(kw)
    return RunResult(**base)


FULL_EXPECT = {
    "stop": {"reason": "debug-exit", "code": 0},
    "exits": {"EPT_VIOLATION": 1, "EPT_MISCONFIG": 2, "CPUID": 0},
    "userspace": [{"mmio": {"gpa": 0xD0000000, "len": 4, "write": False, "data": 0x1234}},
                  {"io": {"port": 0x3F8, "direction": "out", "data": "6f"}},
                  {"io": {"port": 0x3F8}}, {"io": {"data": 0x0A}}, {"io": {"port": 0xF4, "size": 4}}],
    "emulation": {"PF": 3, "NO_DECODE": 3, "PF|ALLOW_RETRY_PF": 1, "SKIP": 0},
    "serial": "ok\n",
    "serial_contains": "ok",
    "regs": {"rax": 0x1234, "cr0": 0x11},
    "memory": [{"gpa": 0x2004, "bytes": "78563412"}],
    "devices": {"regbank": {"reads": 1}},
    "exceptions": [{"vector": 6}],
}


def by_name(checks):
    return {c.name: c for c in checks}


def test_everything_passes() -> None:
    checks = check(scenario(FULL_EXPECT), result())
    assert [c.name for c in checks] == ["stop", "exits", "userspace", "emulation", "serial", "serial_contains",
                                        "regs", "memory", "devices", "exceptions"]
    assert [c.name for c in checks if not c.passed] == []


def test_unstated_sections_are_not_checked() -> None:
    assert check(scenario({}), result()) == []


def test_userspace_first_difference_side_by_side() -> None:
    exp = dict(FULL_EXPECT, userspace=FULL_EXPECT["userspace"][:2]
               + [{"io": {"port": 0x3F8, "data": "6c"}}] + FULL_EXPECT["userspace"][3:])
    c = by_name(check(scenario(exp), result()))["userspace"]
    assert not c.passed
    lines = c.diff.splitlines()
    assert lines[0] == "exit #3 differs: data: expected 6c, got 6b"
    assert lines[1].split("|")[0].strip() == "expected" and lines[1].split("|")[1].strip() == "actual"
    marked = [ln for ln in lines if ln.startswith(">")]
    assert len(marked) == 1 and "#3 io port=0x3f8 data=6c" in marked[0]
    assert "#3 KVM_EXIT_IO direction=out size=1 port=0x3f8 count=1 data=6b" in marked[0]
    assert any("#1 mmio gpa=0xd0000000" in ln and "#1 KVM_EXIT_MMIO phys_addr=0xd0000000" in ln for ln in lines)
    assert any("#5 " in ln for ln in lines)        # context window of 2 after


def test_userspace_wrong_kind_extra_and_missing() -> None:
    exp = dict(FULL_EXPECT, userspace=[{"mmio": {"write": True}}])
    c = by_name(check(scenario(exp), result()))["userspace"]
    assert c.diff.startswith("exit #1 differs: is_write: expected true, got 0")
    c = by_name(check(scenario(dict(FULL_EXPECT, userspace=FULL_EXPECT["userspace"][:4])), result()))["userspace"]
    assert c.diff.startswith("expected 4 exits, got 5: unexpected exit #5 KVM_EXIT_IO")
    c = by_name(check(scenario(dict(FULL_EXPECT, userspace=FULL_EXPECT["userspace"] + ["hlt"])), result()))["userspace"]
    assert c.diff.startswith("expected 6 exits, got 5: exit #6 missing")
    c = by_name(check(scenario(dict(FULL_EXPECT, userspace=[{"hlt": {}}])), result()))["userspace"]
    assert "exit reason: expected KVM_EXIT_HLT, got KVM_EXIT_MMIO" in c.diff


def test_userspace_prefix_and_subsequence_modes() -> None:
    first_two = FULL_EXPECT["userspace"][:2]
    assert by_name(check(scenario(dict(FULL_EXPECT, userspace=first_two, userspace_mode="prefix")), result())
                   )["userspace (prefix)"].passed
    sub = [{"mmio": {}}, {"io": {"port": 0xF4}}]
    assert by_name(check(scenario(dict(FULL_EXPECT, userspace=sub, userspace_mode="subsequence")), result())
                   )["userspace (subsequence)"].passed
    bad = [{"io": {"port": 0xF4}}, {"mmio": {}}]
    c = by_name(check(scenario(dict(FULL_EXPECT, userspace=bad, userspace_mode="subsequence")), result())
                )["userspace (subsequence)"]
    assert not c.passed and c.diff.startswith("expected exit #2 (mmio) not found after actual exit #5")


def test_stop_counts_regs_memory_devices_exceptions_fail_readably() -> None:
    r = result(stop=Stop("internal-error", suberror=1, detail="emulation failure at rip 0x1005"),
               exits={"EPT_VIOLATION": 2, "HLT": 1}, emulation={"ALLOW_RETRY_PF|PF": 2},
               regs={"rax": 0}, sregs={}, memory=[], devices={}, exceptions=[{"vector": 13, "error_code": 0}])
    c = by_name(check(scenario(FULL_EXPECT), r))
    assert c["stop"].diff.splitlines() == ["reason: expected debug-exit, got internal-error",
                                           "code: expected 0x0, got None",
                                           "(stop detail: emulation failure at rip 0x1005)"]
    assert c["exits"].diff.splitlines() == ["EPT_VIOLATION: expected 1, got 2", "EPT_MISCONFIG: expected 2, got 0",
                                            "(other exits: HLT=1)"]
    assert "ALLOW_RETRY_PF|PF: expected 1, got 2" in c["emulation"].diff
    assert c["regs"].diff.splitlines() == ["rax: expected 0x1234, got 0x0", "cr0: expected 0x11, got None"]
    assert c["memory"].diff == "0x2004: not captured by the runner"
    assert c["devices"].diff == "regbank.reads: expected 1, got None"
    assert not c["exceptions"].passed


def test_stop_suberror_from_last_internal_exit() -> None:
    r = result(stop=Stop("internal-error"), userspace=[UserspaceExit("INTERNAL_ERROR", {"suberror": 1, "ndata": 0})])
    exp = {"stop": {"reason": "internal-error", "suberror": "EMULATION"},
           "userspace": [{"internal": {"suberror": 1}}]}
    assert all(c.passed for c in check(scenario(exp), r))


def test_serial_unified_diff_and_trailing_newline() -> None:
    c = by_name(check(scenario({"serial": "hello\nworld\n"}), result(serial="hello\nword\n")))["serial"]
    assert "--- expected serial" in c.diff and "-world" in c.diff and "+word" in c.diff
    c = by_name(check(scenario({"serial": "ok\n"}), result(serial="ok")))["serial"]
    assert c.diff == "only trailing newlines differ: expected 'ok\\n', got 'ok'"


def test_describe_and_json_round_trip() -> None:
    r = result()
    assert r.userspace[0].describe() == "KVM_EXIT_MMIO phys_addr=0xd0000000 len=4 is_write=0 data=34120000"
    text = r.to_json()
    assert text == RunResult.from_json(text).to_json()
    d = json.loads(text)
    assert list(d)[:3] == ["scenario", "backend", "stop"]
    assert list(d["exits"]) == sorted(d["exits"])
    assert d["userspace"][1] == {"reason": "IO", "fields": {"direction": 1, "size": 1, "port": 0x3F8, "count": 1,
                                                            "data": "6f"}}


def test_diff_results_skips_host_dependent() -> None:
    a, b = result(), result(backend="kvm", regs={"rax": 0x1234, "rip": 0x1010, "rbx": 7}, serial="ok!\n")
    assert diff_results(a, b) == ["regs.rbx: '<absent>' != 7", "serial: 'ok\\n' != 'ok!\\n'"]
    assert diff_results(a, b, ["regs.rbx", "serial"]) == []


# ---------------------------------------------------------------- CLI and pytest plugin with a fake runner

@pytest.fixture
def fake_runner(monkeypatch):
    mod = types.ModuleType("kvmsim.scenario.runner")
    mod.run_scenario = lambda sc, backend="sim", trace=False: result(scenario=sc.name, backend=backend)
    monkeypatch.setitem(sys.modules, "kvmsim.scenario.runner", mod)
    return mod


def _yaml(tmp_path: Path, expect_serial: str) -> Path:
    p = tmp_path / "t.yaml"
    p.write_text("name: t\ndescription: d\nguest: {asm: hlt, mode: long64}\n"
                 "devices: [{type: serial16550}, {type: debug-exit}, {type: regbank, gpa: 0xd0000000}]\n"
                 f"expect:\n  stop: {{reason: debug-exit}}\n  serial: {json.dumps(expect_serial)}\n")
    return p


def test_cli_run_human_and_json(tmp_path: Path, capsys, fake_runner) -> None:
    assert main(["run", str(_yaml(tmp_path, "ok\n"))]) == 0
    out = capsys.readouterr().out
    assert "#1 KVM_EXIT_MMIO phys_addr=0xd0000000 len=4 is_write=0 data=34120000" in out
    assert "EPT_MISCONFIG" in out and "PASS stop" in out and "PASS serial" in out and "| ok" in out
    assert main(["run", str(_yaml(tmp_path, "no\n"))]) == 1
    out = capsys.readouterr().out
    assert "FAIL serial" in out and "-no" in out and "+ok" in out and "Traceback" not in out
    assert main(["run", "--json", str(tmp_path / "t.yaml")]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False and doc["result"]["serial"] == "ok\n"
    assert [c["name"] for c in doc["checks"] if not c["passed"]] == ["serial"]


PLUGIN_CONFTEST = """
import sys, types
from kvmsim.scenario.result import RunResult
from kvmsim.vmm.exits import Stop
mod = types.ModuleType("kvmsim.scenario.runner")
mod.run_scenario = lambda sc, backend="sim", trace=False: RunResult(sc.name, backend, Stop("hlt"), serial="hi\\n")
sys.modules["kvmsim.scenario.runner"] = mod
pytest_plugins = ["kvmsim.scenario.pytest_plugin"]
"""


def test_pytest_plugin_collects_runs_and_reports(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(PLUGIN_CONFTEST)
    sc = tmp_path / "scenarios"
    sc.mkdir()
    head = "description: d\nguest: {asm: hlt, mode: long64}\n"
    (sc / "good.yaml").write_text(f"name: good\n{head}expect: {{stop: {{reason: hlt}}, serial: \"hi\\n\"}}\n")
    (sc / "bad.yaml").write_text(f"name: bad\n{head}expect: {{serial: \"bye\\n\"}}\n")
    (sc / "kvm-only.yaml").write_text(f"name: kvm-only\n{head}backends: [kvm]\n")
    (sc / "typo.yaml").write_text(f"name: typo\n{head}expcet: {{}}\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "scenarios"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "2 failed, 1 passed, 1 skipped" in out
    assert "FAILED scenarios/bad.yaml::bad" in out and "FAILED scenarios/typo.yaml::typo" in out
    assert "SKIPPED [1] scenarios/kvm-only.yaml:1: backends ['kvm'] lack sim" in out
    assert "FAIL serial" in out and "-bye" in out and "+hi" in out
    assert "typo.yaml:4: error: unknown field 'expcet' (did you mean 'expect'?)" in out
    assert "Traceback" not in out and "def runtest" not in out
