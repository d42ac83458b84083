"""Fixtures for tests against the real /dev/kvm; each such test is marked `kvm` and skips with why."""

from __future__ import annotations

import pytest

@pytest.fixture(scope="session")
def kvm():
    from kvmsim.realkvm.backend import RealKvm

    with RealKvm() as k:
        yield k


@pytest.fixture(scope="session")
def host(kvm):
    return kvm.host_info()


@pytest.fixture
def binutils() -> None:
    from kvmguest import HAVE_BINUTILS

    if not HAVE_BINUTILS:
        pytest.skip("GNU as/ld/objcopy not found")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """How many scenarios `kvmsim diff` compared against /dev/kvm (test_kvm_diff.py)."""
    from diffsummary import KVM_DIFF_SUMMARY

    if not KVM_DIFF_SUMMARY:
        return
    compared = [s for s in KVM_DIFF_SUMMARY if s[1] in ("MATCH", "DIFF")]
    matched = sum(s[1] == "MATCH" for s in compared)
    skipped = [f"{n} ({why})" for n, why in KVM_DIFF_SUMMARY if why.startswith("SKIP")]
    terminalreporter.write_sep("-", "sim vs /dev/kvm")
    terminalreporter.write_line(f"kvm diff: {len(compared)} scenarios compared, {matched} MATCH, "
                                f"{len(compared) - matched} DIFF; {len(skipped)} skipped")
    for s in skipped:
        terminalreporter.write_line(f"  {s}")
