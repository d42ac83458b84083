"""Issue 14 events from userspace, on both backends through the Python API: KVM_GET/SET_VCPU_EVENTS
round trips, KVM_INTERRUPT's queueing rules, KVM_SET_GUEST_DEBUG's hidden TF and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends import BACKENDS
from kvmsim.errors import BackendError
from kvmsim.realkvm.backend import vendor_module
from kvmsim.scenario.runner import make_machine, run_machine
from kvmsim.scenario.schema import Scenario
from kvmsim.uapi import (KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_VCPUEVENT_VALID_NMI_PENDING,
                         KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SMM, KvmGuestDebug, KvmVcpuEvents)

REPO = Path(__file__).resolve().parent.parent

# The guest counts vector-0x20 interrupts in EBX and NMIs in ESI; it stops at the OUT to 0x80
# (IF=0), then at the OUT to 0x81 (IF=1), then reports EBX in the debug-exit code.
GUEST = """
.include "kvmsim.inc"
.globl _start
_start:
    SET_IDT_HANDLER 0x20, irq
    SET_IDT_HANDLER 2, nmi
    xorl %ebx, %ebx
    xorl %esi, %esi
    cli
    outb %al, $0x80
    sti
    nop
    outb %al, $0x81
    movl %ebx, %eax
    EXIT_EAX
irq: incl %ebx
    iretq
nmi: incl %esi
    iretq
"""


def _machine(backend: str):
    sc = Scenario.model_validate({"name": "events", "description": "events test guest",
                                  "guest": {"mode": "long64", "asm": GUEST},
                                  "devices": [{"type": "debug-exit", "port": 0xF4}]},
                                 context={"base_dir": REPO / "scenarios"})
    return make_machine(sc, backend)


def _port(vcpu) -> int:
    assert vcpu.mapping.run.exit_reason == 2
    return vcpu.mapping.run.io.port


@pytest.mark.parametrize("backend", BACKENDS)
def test_vcpu_events_report_a_kvm_interrupt_and_round_trip(backend: str) -> None:
    with _machine(backend) as m:
        v = m.vcpu
        assert v.run() == 0 and _port(v) == 0x80
        before = v.get_vcpu_events()
        assert before.flags == KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM
        assert before.interrupt.injected == 0 and before.nmi.pending == 0 and before.exception.injected == 0
        v.nmi()
        mid = v.get_vcpu_events()
        assert mid.nmi.pending == 1                       # KVM_NMI queued, process_nmi made it pending
        saved = KvmVcpuEvents.from_buffer_copy(mid)
        v.set_vcpu_events(saved)
        assert v.get_vcpu_events().as_dict() == mid.as_dict()
        # Drop the NMI again through SET (a restore of the state before KVM_NMI).
        v.set_vcpu_events(before)
        assert v.get_vcpu_events().nmi.pending == 0
        assert v.run() == 0 and _port(v) == 0x81
        assert v.get_regs().rsi == 0                      # the dropped NMI never arrived


@pytest.mark.parametrize("backend", BACKENDS)
def test_kvm_interrupt_is_reported_injected_and_restoring_it_delivers_it(backend: str) -> None:
    with _machine(backend) as m:
        v = m.vcpu
        assert v.run() == 0 and _port(v) == 0x80
        assert v.run() == 0 and _port(v) == 0x81              # now IF=1, no shadow: ready
        run = v.mapping.run
        assert run.if_flag == 1 and run.ready_for_interrupt_injection == 1
        v.interrupt(0x20)
        ev = v.get_vcpu_events()
        assert (ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.soft) == (1, 0x20, 0)
        cleared = KvmVcpuEvents.from_buffer_copy(ev)
        cleared.interrupt.injected = 0
        v.set_vcpu_events(cleared)                            # take it back: never delivered
        assert v.get_vcpu_events().interrupt.injected == 0
        v.set_vcpu_events(ev)                                 # and put it back: delivered once
        assert v.run() == 0 and _port(v) == 0xF4
        assert v.get_regs().rbx == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_vcpu_events_refuses_what_the_kernel_refuses(backend: str) -> None:
    with _machine(backend) as m:
        v = m.vcpu
        for mutate in (lambda e: setattr(e, "flags", e.flags | 0x80000000),            # unknown flag
                       lambda e: (setattr(e.exception, "injected", 1), setattr(e.exception, "nr", 2))):   # NMI vector
            ev = v.get_vcpu_events()
            mutate(ev)
            with pytest.raises(BackendError) as err:
                v.set_vcpu_events(ev)
            assert err.value.errno == 22


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_debug_singlestep_hides_tf_and_bad_control_is_einval(backend: str) -> None:
    with _machine(backend) as m:
        v = m.vcpu
        assert v.run() == 0 and _port(v) == 0x80
        if backend == "sim":   # kvm_pvm (this host's /dev/kvm) accepts unknown control bits; x86.c refuses them
            with pytest.raises(BackendError) as err:
                v.set_guest_debug(KvmGuestDebug(control=0x40000000))
            assert err.value.errno == 22
        v.set_guest_debug(KvmGuestDebug(control=KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP))
        assert not v.get_regs().rflags & 0x100                # TF is KVM's, not shown to userspace
        v.set_guest_debug(KvmGuestDebug(control=0))
        assert v.run() == 0 and _port(v) == 0x81              # no debug exit once it is off


def test_sim_kvm_interrupt_with_if_clear_fails_vm_entry() -> None:
    """VMX: KVM_INTERRUPT's vector is injected at the next entry whatever IF says; with IF=0 the
    VM-entry check fails (SDM 26.3.1.4): KVM_EXIT_FAIL_ENTRY, reason 0x80000021.  (kvm_pvm
    delivers it instead: it has no VMX entry checks, so this is sim-only.)"""
    with _machine("sim") as m:
        v = m.vcpu
        assert v.run() == 0 and _port(v) == 0x80
        assert v.mapping.run.ready_for_interrupt_injection == 0
        v.interrupt(0x20)
        assert v.run() == 0
        run = v.mapping.run
        assert run.exit_reason == 9 and run.fail_entry.hardware_entry_failure_reason == 0x80000021


def test_sim_kvm_interrupt_errors() -> None:
    with _machine("sim") as m:
        with pytest.raises(BackendError) as err:
            m.vcpu.interrupt(256)
        assert err.value.errno == 22


def _run_with_irq_at_first_exit(asm: str):
    """The guest on the sim, with the VMM's PIC raising vector 0x20 at the first userspace exit."""
    sc = Scenario.model_validate({"name": "w", "description": "w", "guest": {"mode": "long64", "asm": asm},
                                  "devices": [{"type": "debug-exit", "port": 0xF4}],
                                  "vmm": {"irqs": [{"at_userspace_exit": 1, "vector": 0x20}]}},
                                 context={"base_dir": REPO / "scenarios"})
    with make_machine(sc, "sim") as m:
        return run_machine(m)


def test_window_request_gives_irq_window_open_and_the_vmm_injects() -> None:
    """The scenario path: vmm.irqs raised at IF=0 reaches the guest after the STI shadow."""
    res = _run_with_irq_at_first_exit(GUEST)
    assert [e.reason for e in res.userspace] == ["IO", "IRQ_WINDOW_OPEN", "IO", "IO"]
    assert res.stop.code == 1 and res.exits["INTERRUPT_WINDOW"] == 1
    assert res.exits["PREEMPTION_TIMER"] == 1     # the immediate exit behind the re-injected KVM_INTERRUPT


# INT3 planted in the guest's code: with KVM_GUESTDBG_USE_SW_BP the #BP is intercepted.
BP_GUEST = """
.include "kvmsim.inc"
.globl _start
_start:
    SET_IDT_HANDLER 3, bp_handler
    xorl %ebx, %ebx
    xorl %esi, %esi
    outb %al, $0x80
bp1: int3
    incl %esi
    movl %ebx, %eax
    EXIT_EAX
bp_handler:
    incl %ebx
    iretq
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sw_bp", [True, False], ids=["use_sw_bp", "guest_bp"])
def test_sw_breakpoint_exits_to_userspace_only_with_use_sw_bp(backend: str, sw_bp: bool) -> None:
    """With USE_SW_BP the guest's INT3 is KVM_EXIT_DEBUG exception 3 with pc on the INT3 (the
    guest's #BP handler does not run; the VMM steps over it); without it the guest handles #BP."""
    sc = Scenario.model_validate({"name": "bp", "description": "bp", "guest": {"mode": "long64", "asm": BP_GUEST},
                                  "devices": [{"type": "debug-exit", "port": 0xF4}],
                                  "vmm": {"guest_debug": [{"at_userspace_exit": 1,
                                                           "control": ["enable", "use_sw_bp"] if sw_bp else []}]}},
                                 context={"base_dir": REPO / "scenarios"})
    with make_machine(sc, backend) as m:
        bp1 = m.image.symbols["bp1"]
        res = run_machine(m)
    kinds = [e.reason for e in res.userspace]
    if backend == "kvm" and vendor_module() == "kvm_pvm":
        # kvm_pvm artefact: CPL0 code runs in KVM's emulator, whose INT3 (emulate_int) works in
        # real mode only, so either way the INT3 ends the run with KVM_INTERNAL_ERROR_EMULATION.
        assert kinds == ["IO", "INTERNAL_ERROR"] and res.userspace[1].fields["suberror"] == 1
        return
    if sw_bp:
        assert kinds == ["IO", "DEBUG", "IO"]
        dbg = res.userspace[1].fields
        assert dbg["exception"] == 3 and dbg["pc"] == bp1
        assert res.regs["rbx"] == 0 and res.regs["rsi"] == 1
    else:
        assert kinds == ["IO", "IO"]
        assert res.regs["rbx"] == 1 and res.regs["rsi"] == 1


SHADOW_GUEST = """
.include "kvmsim.inc"
.globl _start
_start:
    SET_IDT_HANDLER 0x20, irq
    xorl %ebx, %ebx
    xorl %edi, %edi
    movw %ss, %dx
    cli
    outb %al, $0x80
    nop
    SHADOW
shadow_end:
    nop
    nop
    movl %ebx, %eax
    EXIT_EAX
irq: incl %ebx
    movq (%rsp), %rsi
    leaq shadow_end(%rip), %rax
    cmpq %rax, %rsi
    sete %al
    movzbl %al, %edi
    iretq
"""


@pytest.mark.parametrize("shadow", ["sti\\n nop", "sti\\n movw %dx, %ss\\n nop"], ids=["sti", "sti+mov_ss"])
def test_window_opens_at_the_end_of_the_sti_and_mov_ss_shadows(shadow: str) -> None:
    """Interrupt-window exiting waits while IF=0 and while an STI or MOV-SS shadow blocks: the
    handler interrupts exactly shadow_end, after the instruction that follows the last shadow."""
    asm = SHADOW_GUEST.replace("SHADOW", shadow.replace("\\n", "\n"))
    res = _run_with_irq_at_first_exit(asm)
    assert [e.reason for e in res.userspace] == ["IO", "IRQ_WINDOW_OPEN", "IO"]
    assert res.stop.code == 1 and res.regs["rdi"] == 1 and res.exits["INTERRUPT_WINDOW"] == 1


HWBP_GUEST = """
.include "kvmsim.inc"
.globl _start
_start:
    xorl %ebx, %ebx
    outb %al, $0x80
    movl $3, %ecx
1:
hw_bp:
    incl %ebx
    decl %ecx
    jnz 1b
    movl %ebx, %eax
    EXIT_EAX
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_hw_breakpoint_exits_before_the_instruction_each_time(backend: str) -> None:
    """KVM_GUESTDBG_USE_HW_BP with DR0 = hw_bp, DR7 = L0 (execute): every time the loop reaches
    hw_bp, KVM_EXIT_DEBUG exception 1, pc = hw_bp, dr6 = B0 | DR6_ACTIVE_LOW; the VMM resumes
    with RFLAGS.RF and the instruction runs: three stops, the loop's count unchanged."""
    with _machine_asm(backend, HWBP_GUEST, {}) as m:
        bp = m.image.symbols["hw_bp"]
    sc_vmm = {"guest_debug": [{"at_userspace_exit": 1, "control": ["enable", "use_hw_bp"],
                               "debugreg": [bp, 0, 0, 0, 0, 0, 0, 0x401]}]}
    with _machine_asm(backend, HWBP_GUEST, sc_vmm, max_exits=8) as m:
        res = run_machine(m)
    debug = [e.fields for e in res.userspace if e.reason == "DEBUG"]
    assert all(d["exception"] == 1 and d["pc"] == bp and d["dr6"] == 0xFFFF0FF1 for d in debug)
    if backend == "kvm" and vendor_module() == "kvm_pvm":
        # kvm_pvm artefact: its CPL0 code runs in KVM's emulator, whose check of the debugger's
        # breakpoints (kvm_vcpu_check_code_breakpoint) ignores RFLAGS.RF, so the VMM's RF does
        # not get past the breakpoint: the same stop repeats until the run's limit.
        assert [e.reason for e in res.userspace] == ["IO"] + ["DEBUG"] * 7 and res.stop.reason == "limit"
        return
    assert [e.reason for e in res.userspace] == ["IO", "DEBUG", "DEBUG", "DEBUG", "IO"]
    assert res.stop.code == 3


def _machine_asm(backend: str, asm: str, vmm: dict, max_exits: int = 100):
    sc = Scenario.model_validate({"name": "hwbp", "description": "hwbp", "guest": {"mode": "long64", "asm": asm},
                                  "devices": [{"type": "debug-exit", "port": 0xF4}], "vmm": vmm,
                                  "limits": {"max_exits": max_exits}},
                                 context={"base_dir": REPO / "scenarios"})
    return make_machine(sc, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_guestdbg_blockirq_holds_back_a_pending_nmi(backend: str) -> None:
    """KVM_GUESTDBG_BLOCKIRQ: kvm_check_and_inject_events injects no new NMI or interrupt while the
    debugger has it set; the NMI stays pending and arrives once it is cleared."""
    with _machine(backend) as m:
        v = m.vcpu
        assert v.run() == 0 and _port(v) == 0x80
        v.set_guest_debug(KvmGuestDebug(control=KVM_GUESTDBG_ENABLE | 0x00100000))
        v.nmi()
        assert v.run() == 0 and _port(v) == 0x81
        assert v.get_regs().rsi == 0 and v.get_vcpu_events().nmi.pending == 1
        v.set_guest_debug(KvmGuestDebug(control=0))
        assert v.run() == 0 and _port(v) == 0xF4
        assert v.get_regs().rsi == 1
