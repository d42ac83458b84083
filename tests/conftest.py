"""Shared test setup. Scenario files are collected by kvmsim.scenario.pytest_plugin (pyproject addopts)."""

from __future__ import annotations

import pytest

from kvmsim.realkvm.probe import kvm_available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every item marked `kvm` (a test, or the kvm param of backends.BACKENDS) skips with the reason
    where /dev/kvm is unusable, whichever test files run."""
    if not any(item.get_closest_marker("kvm") for item in items):
        return
    ok, why = kvm_available()
    if not ok:
        skip = pytest.mark.skip(reason=f"no usable KVM: {why}")
        for item in items:
            if item.get_closest_marker("kvm"):
                item.add_marker(skip)
