"""End to end: kvm-unit-tests images, built from the shared archive into the cache, run unmodified
through `kvmsim kut` on the sim; each test of the fast subset must PASS with a SUMMARY that has no
unexpected failure.  Skips with the reason where gcc/make or the archive are absent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvmsim import cli
from kvmsim.errors import ScenarioError
from kvmsim.kut import build

# The tests that pass end to end today, a few seconds each (issue 13's fast subset grows as the platform does).
FAST = {"x86_64": ["setjmp", "memory", "hypercall"], "i386": ["emulator", "setjmp"]}


def _tree(arch: str) -> build.KutTree:
    try:
        return build.build_from_archive(arch)
    except ScenarioError as e:
        pytest.skip(f"no kvm-unit-tests build: {e.msg.splitlines()[0]}")


@pytest.fixture(scope="module")
def tree() -> build.KutTree:
    return _tree("x86_64")


@pytest.mark.parametrize("arch", list(FAST))
def test_fast_subset_passes(arch: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = _tree(arch)
    fast = FAST[arch]
    status = cli.main(["kut", "--kut-dir", str(tree.root), "--log-dir", str(tmp_path), "-j", "2", *fast])
    out = capsys.readouterr().out
    lines = {m.group(2): m for m in re.finditer(r"^(PASS|FAIL|SKIP) (\S+) ?(.*)$", out, re.M)}
    for name in fast:
        m = lines.get(name)
        assert m is not None, out
        assert m.group(1) == "PASS", out
        summary = m.group(3)
        assert re.fullmatch(r"\(\d+ tests(, \d+ skipped)?\)", summary), summary    # no failures of any kind
        log = (tmp_path / f"{name}.log").read_text()
        assert f"SUMMARY: {summary[1:-1]}" in log and "--- PASS" in log
    assert status == 0, out


# smp = 2 in the cfg; run on one vCPU (--smp1), as `make kut` does.  xapic's pending-NMI test alone
# is 1.4 M exits (about 150 s here), vmexit_cpuid repeats CPUID for 2^30 virtual cycles.
FAST_SMP1 = ["xapic", "vmexit_cpuid"]


def test_xapic_and_vmexit_cpuid_pass_on_one_vcpu(tree: build.KutTree, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    status = cli.main(["kut", "--kut-dir", str(tree.root), "--log-dir", str(tmp_path), "--smp1", "-j", "2",
                       *FAST_SMP1])
    out = capsys.readouterr().out
    for name in FAST_SMP1:
        m = re.search(rf"^(PASS|FAIL|SKIP) {name}( .*)?$", out, re.M)
        assert m is not None and m.group(1) == "PASS", out
        log = (tmp_path / f"{name}.log").read_text()
        assert "\nFAIL: " not in log and "--- PASS" in log, log[-2000:]
    summary = re.search(r"^PASS xapic \((\d+) tests(, \d+ skipped)?\)$", out, re.M)
    assert summary is not None, out                          # xapic's own SUMMARY: no failures
    assert status == 0, out


def test_tap_has_one_line_per_report(tree: build.KutTree, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """setjmp's 10 report() lines become 10 TAP `ok` lines, numbered, then the plan."""
    status = cli.main(["kut", "--kut-dir", str(tree.root), "--log-dir", str(tmp_path), "--tap", "setjmp"])
    out = capsys.readouterr().out.splitlines()
    assert status == 0 and out[0] == "TAP version 13"
    oks = [ln for ln in out if ln.startswith("ok ")]
    assert [ln.split(" - ")[0] for ln in oks] == [f"ok {i}" for i in range(1, 11)]
    assert all(ln.split(" - ", 1)[1].startswith("setjmp: actual") for ln in oks)
    assert "1..10" in out and not any(ln.startswith("not ok") for ln in out)


@pytest.mark.kvm
def test_same_test_on_dev_kvm(tree: build.KutTree, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The same scenario on the real backend (real KVM's irqchip): setjmp's SUMMARY there too."""
    status = cli.main(["kut", "--kut-dir", str(tree.root), "--log-dir", str(tmp_path), "--backend", "kvm", "setjmp"])
    out = capsys.readouterr().out
    assert status == 0 and "PASS setjmp (10 tests)" in out, out
