"""`make kut-table` (kvmsim/kut/table.py): run_tests.sh lines parsed per column, differences
noted with their one-line reason or flagged, and the README block rewritten in place."""

from __future__ import annotations

from pathlib import Path

from kvmsim.kut import table

OURS = """PASS setjmp (10 tests)
FAIL xapic (timeout; duration=60s)
SKIP vmx (nested VMX: kvmsim models no nested virtualization (its CPUID has no VMX))
kut: 3 tests, 1 PASS, 1 FAIL, 1 SKIP in 9.0 s (sim; logs in /tmp/x)
"""
TCG = """PASS setjmp (10 tests)
FAIL xapic (aborted)
PASS vmx (3 tests)
kut: 3 tests, 2 PASS, 1 FAIL, 0 SKIP in 1.0 s (qemu accel=tcg; logs in /tmp/y)
"""


def test_lines_are_parsed_per_test_with_the_counts_line() -> None:
    got, last = table.parse(OURS)
    assert got == {"setjmp": ("PASS", "(10 tests)"), "xapic": ("FAIL", "(timeout; duration=60s)"),
                   "vmx": ("SKIP", "(nested VMX: kvmsim models no nested virtualization (its CPUID has no VMX))")}
    assert last.startswith("kut: 3 tests, 1 PASS")


def test_a_difference_gets_its_reason_or_is_flagged_unexplained(tmp_path: Path) -> None:
    ours, tcg = table.parse(OURS)[0], table.parse(TCG)[0]
    text = table.table(["setjmp", "xapic", "vmx"], [ours, {}, tcg, {}], ["a", "b", "c", "d"])
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln}
    assert rows["setjmp"].endswith("| not run | PASS (10 tests) | not run |  |")        # agree: no note
    assert "FAIL (aborted)" in rows["xapic"] and table.DIFFERENCES["xapic"] not in rows["xapic"]  # same verdict
    assert rows["vmx"].endswith("| unexplained difference |")                            # SKIP vs PASS
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n", encoding="utf-8")
    table.write_readme(readme, text)
    table.write_readme(readme, text)                  # rewritten in place, not appended twice
    doc = readme.read_text(encoding="utf-8")
    assert doc.count(table.BEGIN) == 1 and doc.startswith("# x\n\nbefore\n") and "| vmx |" in doc
