"""The in-kernel LAPIC seen from a running guest: the APIC-access exit and its qualification,
handle_apic_access's EOI fast path and emulation, the APIC page without an irqchip (unchanged:
an MMIO hole for userspace), CR8 without SET_TPR exits, and HLT with nothing to wake it."""

from __future__ import annotations

from typing import Any

import pytest

from kvmsim.hw.vmcs import ExitReason
from kvmsim.kvm import vmx
from kvmsim.kvm.lapic import USERSPACE_EXIT_NS, VMEXIT_NS
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine

DEV = [{"type": "debug-exit", "port": 0xF4}]
IRQCHIP = {"irqchip": True}


@pytest.fixture
def apic_access_quals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The exit qualification of every APIC_ACCESS exit handled."""
    seen: list[int] = []
    real = vmx.KVM_VMX_EXIT_HANDLERS[ExitReason.APIC_ACCESS]

    def spy(vcpu: Any) -> int:
        seen.append(vcpu.hw.vmcs.exit_qualification)
        return real(vcpu)

    monkeypatch.setitem(vmx.KVM_VMX_EXIT_HANDLERS, ExitReason.APIC_ACCESS, spy)
    return seen


def test_apic_access_qualification_and_emultype(apic_access_quals: list[int]) -> None:
    with machine("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        movl $0xfee00000, %ebp
        movl 0x30(%ebp), %esi        # read, offset 0x30
        movl $0x1ff, 0xf0(%ebp)      # write, offset 0xf0
        movl $0, 0xb0(%ebp)          # EOI write: fast path
        EXIT 0
    """, kvm=IRQCHIP, devices=DEV) as m:
        kvm_run(m, KvmExit.IO)
        v = m.vcpu.vcpu
        assert apic_access_quals == [0x0030, 0x10F0, 0x10B0]      # SDM table 28-6: offset | type << 12
        assert v.stat.emulation_by_type == {0: 2}                  # the EOI write was not emulated
        assert m.vcpu.get_regs().rsi == 0x50014
        assert v.stat.exits_by_reason["APIC_ACCESS"] == 3
        assert v.stat.exits_by_reason.get("EPT_VIOLATION", 0) == 0


def test_without_irqchip_the_apic_page_is_mmio_for_userspace() -> None:
    with machine("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        movl $0xfee00000, %ebp
        movl 0x30(%ebp), %esi
        EXIT 0
    """, devices=DEV) as m:
        run = kvm_run(m, KvmExit.MMIO)
        assert run.mmio.phys_addr == 0xFEE00030 and not run.mmio.is_write and run.mmio.len == 4
        assert m.vcpu.vcpu.stat.exits_by_reason.get("APIC_ACCESS", 0) == 0


def test_cr8_writes_stay_in_the_kernel_with_an_irqchip() -> None:
    asm = """
        .include "kvmsim.inc"
        GUEST_ENTRY
        movq $5, %rax
        movq %rax, %cr8
        xorq %rax, %rax
        movq %rax, %cr8              # lowering the TPR: SET_TPR for a userspace LAPIC only
        EXIT 0
    """
    with machine(asm, kvm=IRQCHIP, devices=DEV) as m:
        kvm_run(m, KvmExit.IO)
    with machine(asm, devices=DEV) as m:
        kvm_run(m, KvmExit.SET_TPR)


def test_hlt_with_nothing_to_wake_it_ends_the_run() -> None:
    with machine("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        cli
        hlt
        EXIT 0
    """, kvm=IRQCHIP, devices=DEV) as m:
        r = m.vcpu.run()
        v = m.vcpu.vcpu
        assert r == -4 and KvmExit(m.vcpu.mapping.run.exit_reason) == KvmExit.INTR
        assert v.arch.mp_state_halted and v.hw.insn_limit_hit
        assert v.stat.exits_by_reason["HLT"] == 1


def test_timer_runs_are_reproducible() -> None:
    asm = """
        .include "kvmsim.inc"
        GUEST_ENTRY
        SET_IDT_HANDLER 0x40, tick
        movl $0xfee00000, %ebp
        movl $0x1ff, 0xf0(%ebp)
        movl $0xb, 0x3e0(%ebp)
        movl $0x20040, 0x320(%ebp)   # periodic, vector 0x40
        movl $1000, 0x380(%ebp)
        sti
    1:  incl %ebx
        cmpl $5, ticks
        jb 1b
        EXIT 0
    tick:
        incl ticks
        movl %ebx, %ecx              # where the loop was when the tick came
        movl $0, 0xb0(%ebp)
        iretq
        .data
    ticks: .long 0
    """
    seen = []
    for _ in range(2):
        with machine(asm, kvm=IRQCHIP, devices=DEV) as m:
            kvm_run(m, KvmExit.IO)
            regs = m.vcpu.get_regs()
            seen.append((regs.rbx, regs.rcx, m.vcpu.vcpu.stat.exits_by_reason["PREEMPTION_TIMER"]))
    assert seen[0] == seen[1]
    assert seen[0][2] == 5 and seen[0][0] > 5 * 200_000 // 4     # five 200 us periods of spinning


def test_rdtsc_counts_retired_instructions_plus_the_tsc_offset() -> None:
    with machine("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        rdtsc
        movl %eax, %esi
        movl $100, %ecx
    1:  decl %ecx
        jnz 1b
        rdtsc                        # 1 + 2 + 200 instructions later
        movl %eax, %edi
        movl $0x10, %ecx
        movl $1000000, %eax
        xorl %edx, %edx
        wrmsr                        # IA32_TSC: KVM moves the TSC offset
        rdtsc
        movl %eax, %ebx
        EXIT 0
    """, kvm=IRQCHIP, devices=DEV) as m:
        kvm_run(m, KvmExit.IO)
        regs = m.vcpu.get_regs()
        assert regs.rdi - regs.rsi == 203
        assert regs.rbx == 1_000_000 + 1                    # the WRMSR retired in between


def test_a_vm_exit_costs_vmexit_ns_of_virtual_time() -> None:
    with machine("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        rdtsc
        movl %eax, %esi
        xorl %eax, %eax
        cpuid                        # one VM exit
        rdtsc
        movl %eax, %edi
        EXIT 0
    """, kvm=IRQCHIP, devices=DEV) as m:
        kvm_run(m, KvmExit.IO)
        regs = m.vcpu.get_regs()
        assert regs.rdi - regs.rsi == 4 + VMEXIT_NS         # rdtsc, movl, xorl, cpuid retired + the exit


def test_a_round_trip_through_the_vmm_costs_userspace_exit_ns_more() -> None:
    with machine("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        rdtsc
        movl %eax, %esi
        movb $0x41, %al
        outb %al, $0x80              # an exit to userspace: KVM_RUN returns, and is called again
        rdtsc
        movl %eax, %edi
        EXIT 0
    """, kvm=IRQCHIP, devices=DEV) as m:
        assert kvm_run(m, KvmExit.IO).io.port == 0x80
        kvm_run(m, KvmExit.IO)
        regs = m.vcpu.get_regs()
        assert regs.rdi - regs.rsi == 4 + VMEXIT_NS + USERSPACE_EXIT_NS   # rdtsc, movl, movb, outb + the trip


def test_a_serializing_cr_write_without_an_exit_stalls_the_clock() -> None:
    """CR4.PGE is the guest's with EPT: toggling it exits nowhere, yet each write serializes the
    core, and the virtual clock charges ctrlregs.SERIALIZING_CR_WRITE_CYCLES for it."""
    from kvmsim.hw.ctrlregs import SERIALIZING_CR_WRITE_CYCLES
    with machine("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        movq %cr4, %rbx
        rdtsc
        movl %eax, %esi
        xorq $0x80, %rbx             # CR4.PGE
        movq %rbx, %cr4
        xorq $0x80, %rbx
        movq %rbx, %cr4
        rdtsc
        movl %eax, %edi
        EXIT 0
    """, kvm=IRQCHIP, devices=DEV) as m:
        kvm_run(m, KvmExit.IO)
        regs = m.vcpu.get_regs()
        assert m.vcpu.vcpu.stat.exits == 1                  # the EXIT's OUT only: no CR_ACCESS
        assert regs.rdi - regs.rsi == 6 + 2 * SERIALIZING_CR_WRITE_CYCLES
