"""Fixtures for tests against the real /dev/kvm; each such test is marked `kvm` and skips with why."""

from __future__ import annotations

import pytest

from kvmsim.realkvm.probe import kvm_available


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kvm: needs a usable /dev/kvm (skipped with the reason otherwise)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("kvm") for item in items):
        return
    ok, why = kvm_available()
    if not ok:
        skip = pytest.mark.skip(reason=f"no usable KVM: {why}")
        for item in items:
            if item.get_closest_marker("kvm"):
                item.add_marker(skip)


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
