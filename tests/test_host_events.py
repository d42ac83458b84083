"""Host events (uapi.HostEvent): what the host does to a running vCPU from outside, on its
virtual time (the VM-exit count), reaching the model as plain data through the sim vCPU fd."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.errors import BackendError, ScenarioError
from kvmsim.scenario.runner import make_machine, run_machine
from kvmsim.scenario.schema import Scenario
from kvmsim.uapi import HOST_EVENT_REQUESTS, HostEvent, KvmExit

REPO = Path(__file__).resolve().parent.parent
SLICE = 1000          # guest instructions between host NMIs
EINTR = 4

# The handler records the loop counter when the guest's event arrives; each iteration is two
# instructions, so events landing k host-NMI slices apart read counters SLICE // 2 * k apart.
CATCH = """
.include "kvmsim.inc"
.globl _start
_start:
    SET_IDT_HANDLER 2, handler
    SET_IDT_HANDLER 0x20, handler
    xorl  %esi, %esi
    sti
    movl  $100000, %ecx
1:  decl  %ecx
    jnz   1b
    EXIT  0
handler:
    movl  %ecx, %esi
    movl  $1, %ecx              # end the loop after the return
    iretq
"""

SPIN = """
.include "kvmsim.inc"
.globl _start
_start:
    jmp _start
"""


def _scenario(asm: str, events: list[dict]) -> Scenario:
    return Scenario.model_validate(
        {"name": "host-events", "description": "host events test guest", "guest": {"mode": "long64", "asm": asm},
         "devices": [{"type": "debug-exit", "port": 0xF4}], "events": events},
        context={"base_dir": REPO / "scenarios"})


def _caught_at(inject: object, at_exit: int) -> tuple[int, dict[str, int]]:
    """(loop counter the handler saw, VMX exit counts) for `inject` landing after `at_exit` VM exits."""
    sc = _scenario(CATCH, [{"at": {"exit": at_exit}, "inject": inject},
                           {"every": {"guest_insns": SLICE}, "host": "nmi"}])
    with make_machine(sc, "sim") as m:
        res = run_machine(m)
    assert res.stop.reason == "debug-exit" and res.stop.code == 0
    return res.regs["rsi"], res.exits


@pytest.mark.parametrize("inject", ["nmi", {"irq": 0x20}], ids=["KVM_NMI", "KVM_INTERRUPT"])
def test_an_at_exit_event_lands_before_the_entry_after_that_many_exits(inject: object) -> None:
    early, exits_early = _caught_at(inject, 3)
    late, exits_late = _caught_at(inject, 5)
    assert early and late                            # the handler ran
    assert early - late == 2 * SLICE // 2            # two host-NMI slices later
    assert exits_early["EXCEPTION_NMI"] == 3 and exits_late["EXCEPTION_NMI"] == 5   # the loop ends at the event


def test_the_queue_holds_plain_requests_keyed_by_exit_count() -> None:
    sc = _scenario(CATCH, [{"at": {"exit": 3}, "inject": "nmi"}, {"at": {"exit": 3}, "inject": {"irq": 0x20}},
                           {"every": {"guest_insns": SLICE}, "host": "nmi"}])
    with make_machine(sc, "sim") as m:
        assert m.vcpu.vcpu.host_events == {   # type: ignore[attr-defined]
            3: [HostEvent("KVM_NMI", at_exit=3), HostEvent("KVM_INTERRUPT", 0x20, at_exit=3)],
            0: [HostEvent("HOST_NMI", SLICE)]}


def test_a_signal_cancels_the_entry_and_kvm_run_returns_eintr() -> None:
    with make_machine(_scenario(SPIN, []), "sim") as m:
        model = m.vcpu.vcpu   # type: ignore[attr-defined]
        m.vcpu.host_event(HostEvent("HOST_NMI", SLICE))          # type: ignore[attr-defined]
        for n in (7, 9):
            m.vcpu.host_event(HostEvent("SIGNAL", at_exit=n))   # type: ignore[attr-defined]
            assert m.vcpu.run() == -EINTR
            assert m.vcpu.mapping.run.exit_reason == KvmExit.INTR
            assert model.stat.exits == n and model.stat.exits_by_reason["EXCEPTION_NMI"] == n


def test_an_unknown_request_is_refused() -> None:
    with make_machine(_scenario(SPIN, []), "sim") as m:
        with pytest.raises(BackendError, match="unknown host event 'KVM_SET_REGS'"):
            m.vcpu.host_event(HostEvent("KVM_SET_REGS"))   # type: ignore[attr-defined]
    assert "KVM_SET_REGS" not in HOST_EVENT_REQUESTS


@pytest.mark.kvm
def test_real_kvm_has_no_exit_clock() -> None:
    sc = _scenario(CATCH, [{"at": {"exit": 3}, "inject": "nmi"}])
    with pytest.raises(ScenarioError, match="need the sim backend"):
        make_machine(sc, "kvm")


def test_host_ticks_are_external_interrupt_exits_at_the_configured_rate() -> None:
    """`every: {guest_insns: N}, host: tick`: the host's timer interrupt after every N guest
    instructions without another exit; each is an EXTERNAL_INTERRUPT exit KVM handles
    (handle_external_interrupt returns 1), invisible to userspace and the guest."""
    def ticks(every: int) -> tuple[int, int, int]:
        sc = _scenario(CATCH, [{"every": {"guest_insns": every}, "host": "tick"}])
        with make_machine(sc, "sim") as m:
            res = run_machine(m)
            stat = m.vcpu.vcpu.stat   # type: ignore[attr-defined]
        assert res.stop.reason == "debug-exit" and res.regs["rsi"] == 0   # the guest saw nothing
        assert [e.reason for e in res.userspace] == ["IO"]
        return res.exits.get("EXTERNAL_INTERRUPT", 0), stat.irq_exits, res.exits.get("EXCEPTION_NMI", 0)
    fast, fast_counted, nmis = ticks(SLICE)
    slow, _, _ = ticks(4 * SLICE)
    assert fast == fast_counted and nmis == 0
    assert fast >= 190 and abs(fast - 4 * slow) <= 4     # ~200,000 loop instructions / 1000
