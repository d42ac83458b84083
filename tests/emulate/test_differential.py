"""Differential tests: every form in forms.FORMS, in every mode it exists in, against unicorn.

Default run: a few hypothesis examples per (form, mode). The long campaign:
    .venv/bin/python -m pytest tests/emulate -m fuzz        (or KVMSIM_FUZZ=1)
runs >= 100,000 cases (KVMSIM_FUZZ_CASES overrides) and reports every mismatch.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .forms import FORMS
from .harness import compare, make_case

PAIRS = [(f, m) for f in FORMS for m in f.modes]
EXAMPLES = int(os.environ.get("KVMSIM_DIFF_EXAMPLES", "4"))


def test_enough_forms() -> None:
    assert len(PAIRS) >= 200


_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                     phases=(Phase.explicit, Phase.generate),  # seeds don't shrink usefully
                     suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("form,mode", PAIRS, ids=[f"{f.descr} [{m}]" for f, m in PAIRS])
def test_matches_unicorn(form, mode) -> None:  # type: ignore[no-untyped-def]
    @_SETTINGS
    @given(seed=st.integers(0, 2**64 - 1))
    def check(seed: int) -> None:
        case = make_case(form, mode, random.Random(seed))
        diffs = compare(form, mode, case)
        assert not diffs, f"{case.code.hex()}: " + "; ".join(diffs)

    check()


@pytest.mark.fuzz
def test_fuzz_campaign() -> None:
    """>= 100,000 random cases over all forms; fails listing the first mismatches."""
    total = int(os.environ.get("KVMSIM_FUZZ_CASES", "100000"))
    rng = random.Random(int(os.environ.get("KVMSIM_FUZZ_SEED", "1")))
    bad: list[str] = []
    for i in range(total):
        form, mode = PAIRS[i % len(PAIRS)]
        case = make_case(form, mode, rng)
        diffs = compare(form, mode, case)
        if diffs:
            bad.append(f"{form.descr} [{mode}] {case.code.hex()}: {'; '.join(diffs)}")
    print(f"fuzz: {total} cases over {len(PAIRS)} (form, mode) pairs, {len(bad)} mismatches")
    assert not bad, "\n".join(bad[:40])
