"""The CLI's exit statuses (README "Exit status") and batches that never lose a file's result:
0 passed, 1 failed (an expectation, or a guest that did not stop normally), 2 bad input,
3 a kvmsim bug (named file, report-it line, no traceback), 141 quietly on a closed stdout."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kvmsim.cli import main

REPO = Path(__file__).resolve().parents[1]
KVMSIM = REPO / ".venv" / "bin" / "kvmsim"


def _scenario(tmp_path: Path, name: str, asm: str, extra: str = "") -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"name: {name}\ndescription: exit-status case\n"
                 f"guest:\n  mode: long64\n  asm: |\n" + "".join(f"    {ln}\n" for ln in asm.splitlines()) + extra)
    return f


EXIT0 = "movb $0, %al\noutb %al, $0xf4\nhlt"
EXIT7 = "movb $7, %al\noutb %al, $0xf4\nhlt"
# name: (guest asm, extra YAML, status, the reason the JSON result's stop shows)
CASES = {
    "debug-exit-0": (EXIT0, "", 0, "debug-exit"),
    "hlt": ("hlt", "", 0, "hlt"),
    "debug-exit-7": (EXIT7, "", 1, "debug-exit"),
    "shutdown": ("lidt (%rip)\nint3", "", 1, "shutdown"),  # triple fault via a zero-limit IDT
    "limit": ("1: outb %al, $0x80\njmp 1b", "limits: {max_exits: 50}\n", 1, "limit"),
    "expectation-failed": (EXIT0, "expect:\n  stop: {reason: hlt}\n", 1, "debug-exit"),
    "expectation-met": (EXIT7, "expect:\n  stop: {reason: debug-exit, code: 7}\n", 0, "debug-exit"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_status_table(case: str, tmp_path: Path, capsys) -> None:
    asm, extra, status, reason = CASES[case]
    f = _scenario(tmp_path, case, asm, extra)
    assert main(["run", "--json", str(f)]) == status
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"]["stop"]["reason"] == reason
    assert doc["passed"] is (status == 0)


def test_guest_exit_code_is_honoured(tmp_path: Path, capsys) -> None:
    src = tmp_path / "g.S"
    src.write_text('.include "kvmsim.inc"\nGUEST_ENTRY\nEXIT 7\n')
    assert main(["run", "--guest", str(src), "--mode", "long64"]) == 1
    assert "the guest ended in debug-exit with code 0x7" in capsys.readouterr().out
    src.write_text('.include "kvmsim.inc"\nGUEST_ENTRY\nEXIT 0\n')
    assert main(["run", "--guest", str(src), "--mode", "long64"]) == 0


@pytest.mark.parametrize("argv,fragment", [
    (["run", "--mode", "long64", "X.yaml"], "--mode applies only to --guest"),
    (["run", "--guest", "g.S", "--mode", "long64", "X.yaml"], "not both"),
])
def test_contradictory_flags_are_usage_errors(argv: list[str], fragment: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run: ") and fragment in err


def test_batch_runs_every_file_and_json_has_one_entry_each(tmp_path: Path, capsys) -> None:
    bad = _scenario(tmp_path, "a-bad-asm", "movq %rax\nhlt")
    ok = _scenario(tmp_path, "b-ok", EXIT0)
    seven = _scenario(tmp_path, "c-seven", EXIT7)
    missing = tmp_path / "d-missing.yaml"
    assert main(["run", "--json", str(bad), str(ok), str(seven), str(missing)]) == 2
    out = capsys.readouterr()
    docs = json.loads(out.out)
    assert [d["file"] for d in docs] == [str(bad), str(ok), str(seven), str(missing)]
    assert docs[0]["error"]["kind"] == "input" and docs[0]["error"]["line"] == 6
    assert "no such instruction" in docs[0]["error"]["message"] or "Error" in docs[0]["error"]["message"]
    assert docs[1]["passed"] is True and docs[1]["result"]["stop"]["code"] == 0
    assert docs[2]["passed"] is False and docs[2]["result"]["stop"]["code"] == 7
    assert docs[3]["error"]["message"] == "no such file or directory"
    assert f"{bad}:6: error: " in out.err


def test_batch_human_output_reports_the_files_after_a_broken_one(tmp_path: Path, capsys) -> None:
    bad = _scenario(tmp_path, "a-bad-asm", "movq %rax\nhlt")
    ok = _scenario(tmp_path, "b-ok", EXIT0)
    assert main(["run", str(bad), str(ok)]) == 2
    out = capsys.readouterr()
    assert "b-ok [sim]: stopped: debug-exit" in out.out and f"{bad}:6: error:" in out.err


def test_internal_error_names_the_file_and_batch_goes_on(tmp_path: Path, capsys, monkeypatch) -> None:
    import kvmsim.scenario.runner as runner
    real = runner.run_scenario

    def flaky(sc, **kw):
        if sc.name == "a-boom":
            raise ZeroDivisionError("model fell over")
        return real(sc, **kw)
    monkeypatch.setattr(runner, "run_scenario", flaky)
    monkeypatch.delenv("KVMSIM_DEBUG", raising=False)
    boom = _scenario(tmp_path, "a-boom", EXIT0)
    ok = _scenario(tmp_path, "b-ok", EXIT0)
    assert main(["run", "--json", str(boom), str(ok)]) == 3
    out = capsys.readouterr()
    docs = json.loads(out.out)
    assert docs[0]["error"]["kind"] == "internal" and docs[0]["status"] == 3
    assert docs[1]["passed"] is True
    lines = out.err.strip().splitlines()
    assert lines[0] == f"kvmsim: {boom}: internal error: ZeroDivisionError: model fell over"
    assert lines[1].startswith("  please report it with ") and "Traceback" not in out.err


def test_closed_stdout_exits_quietly(tmp_path: Path) -> None:
    if not KVMSIM.exists():
        pytest.skip(f"{KVMSIM} not installed (make test creates it)")
    files = [str(_scenario(tmp_path, f"s{i}", EXIT0)) for i in range(30)]
    env = {k: v for k, v in os.environ.items() if k != "KVMSIM_DEBUG"}
    p = subprocess.run(f"{KVMSIM} run {' '.join(files)} | head -1; echo status=${{PIPESTATUS[0]}}",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, env=env, timeout=120)
    assert p.stdout.splitlines()[0] == "s0 [sim]: stopped: debug-exit code=0x0"
    assert p.stdout.splitlines()[-1] == "status=141" and p.stderr == ""
