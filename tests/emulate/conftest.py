"""Fixtures and markers for the emulator tests.

The `fuzz` marker selects the long differential campaign (>= 100,000 cases); it is
skipped unless asked for:  pytest tests/emulate -m fuzz   (or KVMSIM_FUZZ=1).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("UC_IGNORE_REG_BREAK", "1")  # silence unicorn 2.1 register warnings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: long differential emulator campaign (opt-in)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("-m") or ""
    if "fuzz" in markexpr or os.environ.get("KVMSIM_FUZZ"):
        return
    skip = pytest.mark.skip(reason="fuzz campaign: run with -m fuzz or KVMSIM_FUZZ=1")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)
