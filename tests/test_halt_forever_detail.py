"""A vCPU that halts with the in-kernel LAPIC and nothing that could ever wake it (IF=0, no timer):
KVM would sleep on until userspace gives up; the sim ends the run at once through its instruction
budget, and the stop detail says it was that halt, not a budget really spent (realmode's hang)."""

from __future__ import annotations

from kvmsim.scenario.runner import run_scenario
from kvmsim.scenario.schema import Scenario


def test_halt_with_no_wakeup_names_the_halt() -> None:
    sc = Scenario.model_validate({
        "name": "halt-forever", "description": "cli; hlt with an in-kernel irqchip",
        "guest": {"asm": "cli\nhlt\nhere: jmp here\n", "mode": "long64"},
        "kvm": {"irqchip": True}, "limits": {"max_guest_insns": 1_000_000}})
    r = run_scenario(sc, "sim")
    assert r.stop.reason == "limit"
    assert r.guest_insns < 100                  # nothing near the budget ran
    assert "halted at rip 0x100002 with nothing that could wake it" in r.stop.detail, r.stop.detail
