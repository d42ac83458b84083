"""`make bench` marks each figure met/MISSED against its target in the note column."""

from __future__ import annotations

import pytest

from kvmsim.bench import Figure, format_figures


@pytest.mark.parametrize("fig,verdict", [
    (Figure("pio", 100_000, "/s", target=">= 100,000/s"), "met"),
    (Figure("pio", 99_999, "/s", target=">= 100,000/s"), "MISSED"),
    (Figure("native", 0.79, "/s", 1.0, "bare", target=">= 0.8x bare"), "MISSED"),
    (Figure("native", 0.81, "/s", 1.0, "bare", target=">= 0.8x bare"), "met"),
    (Figure("native", 5e9, "/s", None, "bare", target=">= 0.8x bare"), "not measured"),
    (Figure("emu", None, "/s", target=">= 20,000/s"), "not measured"),
    (Figure("real", 5.0, "/s", 4.0, "sim"), ""),
])
def test_verdict(fig: Figure, verdict: str) -> None:
    assert fig.verdict == verdict


def test_note_column_carries_the_verdict_before_the_note() -> None:
    out = format_figures([Figure("MMIO round trips (sim)", 17_000, "/s", target=">= 30,000/s", note="slow host"),
                          Figure("PIO round trips (sim)", 120_000, "/s", target=">= 100,000/s")]).splitlines()
    assert out[0].split()[-1] == "note"
    assert out[1].startswith("MMIO round trips (sim)") and out[1].endswith("MISSED; slow host")
    assert out[2].endswith(">= 100,000/s  met")
