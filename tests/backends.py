"""The two backends a differential test runs on; the `kvm` one skips, with why, where /dev/kvm is
unusable (tests/conftest.py marks every `kvm` item)."""

from __future__ import annotations

import pytest

BACKENDS = ["sim", pytest.param("kvm", marks=pytest.mark.kvm)]
