"""`kvmsim kut --qemu` (kvmsim/kut/qemu.py): run_tests.sh's command line, the linked run directory
for a tree whose config.mak names a vanished build directory, and x86/run's status as the verdict
(a stand-in x86/run script, so no QEMU is needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.kut import qemu
from kvmsim.kut.cfg import UnitTest


def test_the_command_is_run_tests_sh_s() -> None:
    t = UnitTest("vmexit_cpuid", 1, file="vmexit.flat", test_args="'cpuid'", qemu_params="-cpu qemu64,+x2apic")
    assert qemu.command(t, Path("/k/x86/vmexit.flat"), 1, 90) == [
        "timeout", "-k", "1s", "--foreground", "90s", "./x86/run", "x86/vmexit.flat", "-smp", "1",
        "-cpu", "qemu64,+x2apic", "-append", "cpuid"]


def _tree(tmp_path: Path, status: int, errata: str) -> Path:
    tree = tmp_path / "kut"
    (tree / "x86").mkdir(parents=True)
    (tree / "errata.txt").write_text("", encoding="utf-8")
    (tree / "config.mak").write_text(f"ARCH=x86_64\nERRATATXT={errata}\n", encoding="utf-8")
    run = tree / "x86" / "run"
    run.write_text(f"#!/bin/sh\n. ./config.mak\n[ -f \"$ERRATATXT\" ] || exit 2\n"
                   f"echo \"ACCEL=$ACCEL $*\"\necho 'SUMMARY: 3 tests'\nexit {status}\n", encoding="utf-8")
    run.chmod(0o755)
    (tree / "x86" / "t.flat").write_bytes(b"")
    return tree


@pytest.mark.parametrize("status,verdict", [(0, "PASS t (3 tests)"), (77, "SKIP t (3 tests)"),
                                            (1, "FAIL t (3 tests)")])
def test_x86_run_s_status_is_the_verdict_and_a_gone_build_dir_is_relinked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, verdict: str) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    tree = _tree(tmp_path, status, "/gone/build/errata.txt")
    out, log = qemu.run(UnitTest("t", 1, file="t.flat"), tree / "x86" / "t.flat", "tcg", 1, 30)
    assert out.line() == verdict
    assert "ACCEL=tcg x86/t.flat -smp 1" in log
    assert (tree / "config.mak").read_text(encoding="utf-8").endswith("ERRATATXT=/gone/build/errata.txt\n")


def test_without_qemu_the_reason_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMU", "/nonexistent/qemu-system-x86_64")
    assert "not installed" in qemu.missing()
