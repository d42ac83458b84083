"""Each emulator family, run by the model's emulator and by the real kernel's (kvm_pvm runs every
CPL0 instruction through KVM's emulator; the model emulates each MMIO access): the MMIO exit
stream, registers and results table must be identical (scenarios/emulator-<family>-<mode>.yaml).

Differences the host's vendor module explains are labelled by `kvmsim diff` (scenario/vendor.py),
never dropped; anything else fails the test with the first divergence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.realkvm.backend import vendor_module
from kvmsim.report import diff_lines
from kvmsim.scenario.differential import diff_scenario, skip_reason
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.result import BACKEND_AGREED, diff_results
from kvmsim.scenario.runner import run_scenario


ROOT = Path(__file__).resolve().parents[1]
FAMILIES = sorted((ROOT / "scenarios").glob("emulator-*.yaml"))
FAMILY_NAMES = ("alu", "mov", "muldiv", "shift", "bitops", "setcc", "stack", "string", "misc", "sse", "data", "io")


def test_every_family_has_a_scenario_in_both_modes() -> None:
    names = {p.stem for p in FAMILIES}
    assert {f"emulator-{f}-{m}" for f in FAMILY_NAMES for m in ("long64", "prot32")} <= names


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.kvm) for p in FAMILIES], ids=lambda p: p.stem)
def test_family_matches_the_kernel_emulator(path: Path) -> None:
    sc = load_scenario(path)
    if (why := skip_reason(sc)) is not None:
        pytest.skip(why)          # backends [sim], with the reason in its YAML comment
    c = diff_scenario(sc, vendor_module())
    assert c.status == "MATCH", "\n".join(diff_lines(c))
    # Only the labelled "OUT retired before the exit" RIP difference may remain.
    assert {d.vendor.name for d in c.vendor} <= {"pvm-out-retired"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.kvm) for p in FAMILIES[:2]], ids=lambda p: p.stem)
def test_mmio_streams_and_results_are_identical_field_by_field(path: Path) -> None:
    """The same check without the vendor table: everything but the final RIP is equal."""
    sc = load_scenario(path)
    sim, kvm = run_scenario(sc, "sim"), run_scenario(sc, "kvm", host_events=False)
    assert [u.to_dict() for u in sim.userspace] == [u.to_dict() for u in kvm.userspace]
    assert sim.memory == kvm.memory and sim.memory[0]["bytes"].strip("0")
    assert diff_results(sim, kvm, ignore=["regs.rip"], only=BACKEND_AGREED) == []
