"""Invalid guest state without unrestricted guest (kvm_intel.unrestricted_guest=0): vmx.c's segment
rules (__vmx_guest_state_valid), handle_invalid_guest_state's emulation loop and budget, and the
failed VM entry with emulate_invalid_guest_state=0.  Sim only: kvm_pvm has no VMX module parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.hw.vmcs import VMX_EXIT_REASONS_FAILED_VMENTRY, ExitReason
from kvmsim.kvm import vmx_guest_state as gs
from kvmsim.kvm.vmx import INVALID_STATE_EMULATION_BUDGET
from kvmsim.scenario.loader import load_scenario
from kvmsim.trace.census import Census
from kvmsim.trace.events import Tap
from kvmsim.trace.recorder import Recorder
from kvmsim.uapi import KvmExit, KvmInternalError, KvmSegment
from tests.simvm import kvm_run, machine

DEVICES = [{"type": "debug-exit", "port": 0xF4}]
NO_UG = {"unrestricted_guest": False}
BIG_REAL = {"sregs": {"ds": {"limit": 0xFFFFFFFF, "g": 1}}}


def seg(**kw: int) -> KvmSegment:
    base = dict(base=0, limit=0xFFFF, selector=0, type=3, present=1, dpl=0, db=0, s=1, l=0, g=0, avl=0,
                unusable=0)
    base.update(kw)
    return KvmSegment(**base)


@pytest.mark.parametrize("var, is_cs, ok", [
    (seg(), False, True),
    (seg(type=0xB), True, True),                       # CS: the type is taken as 3
    (seg(type=0xB), False, False),
    (seg(selector=0x1234, base=0x12340), False, True),
    (seg(selector=0xF000, base=0xFFFF0000), True, False),   # the reset CS
    (seg(limit=0xFFFFFFFF, g=1), False, False),        # big real mode
    (seg(db=1), False, False),
])
def test_rmode_segment_valid(var: KvmSegment, is_cs: bool, ok: bool) -> None:
    assert gs.rmode_segment_valid(var, is_cs) is ok


def test_protected_mode_segment_rules() -> None:
    assert gs.code_segment_valid(seg(selector=8, type=0xB))
    assert not gs.code_segment_valid(seg(selector=8, type=0xA))            # not accessed
    assert not gs.code_segment_valid(seg(selector=8 | 3, type=0xB))        # DPL != RPL
    assert gs.code_segment_valid(seg(selector=8 | 3, type=0xF))            # conforming: DPL <= RPL
    assert gs.stack_segment_valid(seg(selector=0x10))
    assert not gs.stack_segment_valid(seg(selector=0x10, dpl=3))
    assert gs.stack_segment_valid(seg(unusable=1, present=0, dpl=3))
    assert not gs.data_segment_valid(seg(selector=0x13, dpl=0))            # DPL < RPL
    assert gs.data_segment_valid(seg(selector=0x13, dpl=0, type=0xB))      # code: no DPL rule
    assert gs.tr_valid(seg(selector=0x20, type=0xB, s=0))
    assert not gs.tr_valid(seg(selector=0x24, type=0xB, s=0))              # TI set
    assert gs.ldtr_valid(seg(unusable=1, present=0))
    assert not gs.ldtr_valid(seg(selector=0x28, type=3, s=0))


def _calls(rec: Recorder, name: str) -> int:
    return sum(1 for e in rec.events if e.kind == "call" and e.name == name)


LOOP = """
        movw    $200, %cx
1:      loop    1b
        movl    $7, %eax
        outl    %eax, $0xf4
"""


def test_budget_of_one_call_then_vcpu_run_comes_back() -> None:
    """203 instructions emulated one by one (EMULTYPE 0): the first handle_invalid_guest_state call
    stops after the kernel's 130 and returns 1; vcpu_run enters again (still no entry possible) and
    the second call ends with the emulated OUT's KVM_EXIT_IO."""
    with Recorder(functions=True) as rec, machine(LOOP, "real16", devices=DEVICES, kvm=NO_UG, vcpu=BIG_REAL) as m:
        run = kvm_run(m, KvmExit.IO)
        assert run.io.port == 0xF4
    assert INVALID_STATE_EMULATION_BUDGET == 130
    assert _calls(rec, "handle_invalid_guest_state") == 2
    assert _calls(rec, "x86_emulate_instruction") == 203
    assert not any(e.kind == "tp" and e.name == "kvm_exit" for e in rec.events)   # never entered


def test_defaults_never_require_emulation() -> None:
    with Recorder(functions=True) as rec, machine(LOOP, "real16", devices=DEVICES, vcpu=BIG_REAL) as m:
        kvm_run(m, KvmExit.IO)
    assert _calls(rec, "handle_invalid_guest_state") == 0 and _calls(rec, "x86_emulate_instruction") == 0


def test_hlt_while_emulating_halts() -> None:
    with machine("nop\nhlt\nnop\n", "real16", devices=DEVICES, kvm=NO_UG, vcpu=BIG_REAL) as m:
        kvm_run(m, KvmExit.HLT)
        assert m.vcpu.get_regs().rip == 0x1002


BAD_DS = {"sregs": {"ds": {"selector": 0x13}}}     # protected mode: DS.DPL 0 < DS.RPL 3
PM = """
        movw    $0x10, %ax
        movw    %ax, %ds
        movl    $3, %ecx
1:      loop    1b
        movl    $0, %eax
        outl    %eax, $0xf4
"""


def test_protected_mode_is_emulated_until_ds_is_reloaded() -> None:
    with Recorder(functions=True) as rec, machine(PM, "prot32", devices=DEVICES, kvm=NO_UG, vcpu=BAD_DS) as m:
        run = kvm_run(m, KvmExit.IO)
        assert run.io.port == 0xF4
    assert _calls(rec, "x86_emulate_instruction") == 2       # MOV AX, MOV DS; then the CPU runs the rest


def test_emulate_invalid_guest_state_off_is_a_failed_vm_entry() -> None:
    with machine(PM, "prot32", devices=DEVICES, kvm={**NO_UG, "emulate_invalid_guest_state": False},
                 vcpu=BAD_DS) as m:
        run = kvm_run(m, KvmExit.FAIL_ENTRY)
        assert run.fail_entry.hardware_entry_failure_reason == int(ExitReason.INVALID_STATE) | \
            VMX_EXIT_REASONS_FAILED_VMENTRY


def test_an_exception_while_emulating_protected_mode_is_an_internal_error() -> None:
    """Outside real mode KVM cannot deliver the #UD while it must emulate: vmx_unhandleable_emulation_
    required → KVM_EXIT_INTERNAL_ERROR (EMULATION)."""
    with machine("ud2\n", "prot32", devices=DEVICES, kvm=NO_UG, vcpu=BAD_DS) as m:
        run = kvm_run(m, KvmExit.INTERNAL_ERROR)
        assert run.internal.suberror == KvmInternalError.EMULATION


IRQ_GUEST = """
        .include "kvmsim.inc"
        SET_IVT_HANDLER 0x20, handler
        sti
        movw    $50, %cx
1:      loop    1b
        movl    $1, %eax
        outl    %eax, $0xf4
handler:
        movw    $0x99, %bx
        movl    $0x20, %eax
        outl    %eax, $0xf4
"""


def test_an_interrupt_waits_for_the_window_then_is_delivered_while_emulating() -> None:
    """The VMM asks for an interrupt window while IF=0 (kvm_run.request_interrupt_window, as a VMM
    with a userspace PIC does): interrupt-window exiting is requested, and handle_invalid_guest_state
    returns to vcpu_run once the window opens, which is after the instruction that follows STI (the
    emulated STI's shadow, toggle_interruptibility): KVM_EXIT_IRQ_WINDOW_OPEN.  KVM_INTERRUPT's vector
    is then delivered through the IVT by KVM (kvm_inject_realmode_interrupt) and its handler is
    emulated too: CX is still 50."""
    with Recorder(functions=True) as rec, machine(IRQ_GUEST, "real16", devices=DEVICES, kvm=NO_UG, vcpu=BIG_REAL) as m:
        m.vcpu.mapping.run.request_interrupt_window = 1
        kvm_run(m, KvmExit.IRQ_WINDOW_OPEN)
        m.vcpu.mapping.run.request_interrupt_window = 0
        m.vcpu.interrupt(0x20)
        run = kvm_run(m, KvmExit.IO)
        data = bytes(m.vcpu.mapping.buf[run.io.data_offset:run.io.data_offset + 4])
        regs = m.vcpu.get_regs()
    assert int.from_bytes(data, "little") == 0x20
    assert (regs.rcx & 0xFFFF, regs.rbx & 0xFFFF) == (50, 0x99)
    assert _calls(rec, "handle_interrupt_window") == 1
    assert not any(e.kind == "tp" and e.name == "kvm_exit" for e in rec.events)


def test_census_of_the_scenario_and_its_twin() -> None:
    """`kvmsim census` of the two scenarios: all 18 calls are EMULTYPE 0 from handle_invalid_guest_state,
    and the default twin adds none."""
    root = Path(__file__).resolve().parents[1] / "scenarios"
    census = Census()
    for name in ("invalid-guest-state-real-mode.yaml", "invalid-guest-state-real-mode-default.yaml"):
        Tap([census]).run(load_scenario(root / name))
    assert census.by_combination == {"0": 18}
    assert dict(census.by_path) == {"handle_invalid_guest_state → kvm_emulate_instruction → x86_emulate_instruction": 18}


@pytest.mark.parametrize("kvm, emulated", [(NO_UG, 1), ({}, 0)])
def test_the_reset_vector_is_emulated_without_unrestricted_guest(kvm: dict, emulated: int) -> None:
    """KVM's reset CS (selector 0xf000, base 0xffff0000) is no vm86 segment: without unrestricted
    guest the first instruction at 0xfffffff0 is already emulated; with the defaults it exits as I/O."""
    asm = ".org 0xfff0\noutl %eax, $0xf4\nhlt\n.org 0x10000\n"
    with Recorder(functions=True) as rec, machine(asm, "reset", devices=DEVICES, kvm=kvm,
                                                  memory=[{"gpa": 0xFFFF0000, "size": "64K", "readonly": True}]) as m:
        run = kvm_run(m, KvmExit.IO)
        assert run.io.port == 0xF4
    assert _calls(rec, "handle_invalid_guest_state") == emulated
    assert _calls(rec, "x86_emulate_instruction") == emulated
