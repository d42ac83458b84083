"""The in-kernel local APIC (kvm/lapic.py) against lapic.c and the SDM (vol. 3 ch. 10/11):
reset values, the masks register writes apply, PPR from TPR and ISR, EOI, IRR → ISR on
acceptance, IPI destinations, the APIC base MSR's transitions, x2APIC MSRs, and the timer's
modes counting down on virtual time (retired guest instructions).  A vCPU of a VM with
KVM_CREATE_IRQCHIP, driven through the model's functions without running a guest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvmsim.errors import BackendError
from kvmsim.kvm import cr, lapic, msr, x86
from kvmsim.kvm.kvm_main import SimKvm
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.lapic import (APIC_DFR, APIC_EOI, APIC_ICR, APIC_ICR2, APIC_ID, APIC_IRR, APIC_ISR, APIC_LDR,
                              APIC_LVR, APIC_LVT0, APIC_LVT1, APIC_LVTERR, APIC_LVTPC, APIC_LVTT, APIC_LVTTHMR,
                              APIC_PROCPRI, APIC_SPIV, APIC_TASKPRI, APIC_TDCR, APIC_TMCCT, APIC_TMICT, APIC_TMR)

BASE = 0xFEE00000


@pytest.fixture
def vcpu() -> Iterator[KvmVcpu]:
    vm = SimKvm().create_vm()
    vm.create_irqchip()
    fd = vm.create_vcpu(0)
    yield fd.vcpu
    vm.close()


def rd(vcpu: KvmVcpu, reg: int, length: int = 4) -> int:
    buf = bytearray(length)
    assert lapic.apic_mmio_read(vcpu, BASE + reg, length, buf) == 0
    return int.from_bytes(buf, "little")


def wr(vcpu: KvmVcpu, reg: int, val: int, length: int = 4) -> None:
    assert lapic.apic_mmio_write(vcpu, BASE + reg, length, val.to_bytes(length, "little")) == 0


def enable(vcpu: KvmVcpu) -> None:
    wr(vcpu, lapic.APIC_SPIV, 0x1FF)


def vec_bit(vcpu: KvmVcpu, base: int, vector: int) -> bool:
    return lapic.apic_test_vector(vcpu.arch.apic, base, vector)


def set_isr(vcpu: KvmVcpu, vector: int) -> None:
    lapic._set_vector(vcpu.arch.apic, APIC_ISR, vector, True)


# ---------------------------------------------------------------- creation, reset

def test_no_irqchip_no_apic() -> None:
    with SimKvm().create_vm() as vm:
        fd = vm.create_vcpu(0)
        assert fd.vcpu.arch.apic is None and not cr.lapic_in_kernel(fd.vcpu)
        assert not vm.kvm.buses["KVM_MMIO_BUS"].ranges       # the APIC page stays a hole for userspace


def test_create_irqchip_twice_or_after_a_vcpu_fails() -> None:
    with SimKvm().create_vm() as vm:
        vm.create_irqchip()
        with pytest.raises(BackendError) as e:
            vm.create_irqchip()
        assert e.value.errno == 17
    with SimKvm().create_vm() as vm:
        vm.create_vcpu(0)
        with pytest.raises(BackendError) as e:
            vm.create_irqchip()
        assert e.value.errno == 22


def test_reset_values(vcpu: KvmVcpu) -> None:
    assert vcpu.arch.apic_base == 0xFEE00900                  # enabled, BSP
    assert rd(vcpu, APIC_ID) == 0
    assert rd(vcpu, APIC_LVR) == 0x50014                      # version 0x14, 6 LVT entries
    assert rd(vcpu, APIC_SPIV) == 0xFF                        # software-disabled
    assert rd(vcpu, APIC_DFR) == 0xFFFF_FFFF
    assert rd(vcpu, APIC_LVT0) == 0x700                       # ExtINT, unmasked (LINT0_REENABLED quirk)
    for reg in (APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT1, APIC_LVTERR):
        assert rd(vcpu, reg) == 0x10000
    for reg in (APIC_TASKPRI, APIC_PROCPRI, APIC_LDR, APIC_ICR, APIC_TMICT, APIC_TMCCT, APIC_TDCR):
        assert rd(vcpu, reg) == 0
    assert vcpu.arch.apic.divide_count == 2


# ---------------------------------------------------------------- masks

@pytest.mark.parametrize("reg,written,read", [
    (APIC_TASKPRI, 0xFFFF_FFFF, 0xFF),
    (APIC_LDR, 0xFFFF_FFFF, 0xFF00_0000),
    (APIC_DFR, 0, 0x0FFF_FFFF),
    (APIC_SPIV, 0xFFFF_FFFF, 0x3FF),
    (APIC_ICR2, 0xFFFF_FFFF, 0xFF00_0000),
    (APIC_TDCR, 0xFFFF_FFFF, 0xB),
    (APIC_ID, 0x0500_0000, 0x0500_0000),
    (APIC_LVR, 0, 0x50014),                                  # read-only
    (APIC_LVTTHMR, 0xFFFF_FFFF, 0x117FF),                    # vector, mode, delivery status, mask
    (APIC_LVTPC, 0xFFFF_FFFF, 0x117FF),
    (APIC_LVT0, 0xFFFF_FFFF, 0x1F7FF),                       # + polarity, remote IRR, trigger
    (APIC_LVT1, 0xFFFF_FFFF, 0x1F7FF),
    (APIC_LVTERR, 0xFFFF_FFFF, 0x110FF),
    (APIC_LVTT, 0xFFFF_FFFF, 0x710FF),                       # + timer mode (TSC-deadline in the CPUID)
])
def test_write_masks(vcpu: KvmVcpu, reg: int, written: int, read: int) -> None:
    enable(vcpu)
    wr(vcpu, reg, written)
    assert rd(vcpu, reg) == read


def test_lvt_writes_stay_masked_while_software_disabled(vcpu: KvmVcpu) -> None:
    wr(vcpu, APIC_LVT1, 0x41)
    assert rd(vcpu, APIC_LVT1) == 0x10041
    enable(vcpu)
    wr(vcpu, APIC_LVT1, 0x41)
    assert rd(vcpu, APIC_LVT1) == 0x41
    wr(vcpu, APIC_SPIV, 0xFF)                                # software-disable masks every LVT
    assert rd(vcpu, APIC_LVT1) == 0x10041


def test_partial_and_misaligned_accesses(vcpu: KvmVcpu) -> None:
    assert rd(vcpu, APIC_LVR + 2, 1) == 0x05                   # bytes of a register
    assert rd(vcpu, APIC_LVR, 2) == 0x0014
    wr(vcpu, APIC_TASKPRI, 0x20)
    wr(vcpu, APIC_TASKPRI + 1, 0x77, 1)                        # not a 32-bit aligned write: dropped
    wr(vcpu, APIC_TASKPRI, 0x77, 2)
    assert rd(vcpu, APIC_TASKPRI) == 0x20
    assert rd(vcpu, 0x3C, 4) == 0                              # misaligned across registers: 0
    assert rd(vcpu, 0x40) == 0                                 # reserved register reads 0
    assert lapic.kvm_lapic_reg_read(vcpu, 0x40, 4) is None


def test_disabled_apic_page_reads_ones_and_ignores_writes(vcpu: KvmVcpu) -> None:
    assert x86.kvm_apic_set_base(vcpu, 0xFEE00100, False) == 0   # hardware-disabled
    assert rd(vcpu, APIC_LVR) == 0xFFFF_FFFF
    wr(vcpu, APIC_TASKPRI, 0x50)
    assert lapic.kvm_lapic_get_reg(vcpu.arch.apic, APIC_TASKPRI) == 0


# ---------------------------------------------------------------- TPR, PPR, CR8

@pytest.mark.parametrize("tpr,isr,ppr", [
    (0x00, None, 0x00), (0x35, None, 0x35), (0x30, 0x51, 0x50), (0x65, 0x51, 0x65), (0x5F, 0x51, 0x5F),
    (0x40, 0x4A, 0x40),
])
def test_ppr_from_tpr_and_isr(vcpu: KvmVcpu, tpr: int, isr: int | None, ppr: int) -> None:
    if isr is not None:
        set_isr(vcpu, isr)
    wr(vcpu, APIC_TASKPRI, tpr)
    assert rd(vcpu, APIC_PROCPRI) == ppr


def test_cr8_is_tpr_bits_7_4(vcpu: KvmVcpu) -> None:
    assert cr.kvm_set_cr8(vcpu, 0x9) == 0
    assert rd(vcpu, APIC_TASKPRI) == 0x90
    wr(vcpu, APIC_TASKPRI, 0x3C)
    assert cr.kvm_get_cr8(vcpu) == 0x3
    assert cr.kvm_set_cr8(vcpu, 0x10) == 1                      # reserved bits: #GP
    assert vcpu.arch.cr8 == 0                                    # the userspace-LAPIC copy is unused


# ---------------------------------------------------------------- EOI, acceptance, IPIs

def test_eoi_clears_the_highest_isr_bit(vcpu: KvmVcpu) -> None:
    for v in (0x31, 0x80, 0x45):
        set_isr(vcpu, v)
    wr(vcpu, APIC_EOI, 0)
    assert not vec_bit(vcpu, APIC_ISR, 0x80)
    assert vec_bit(vcpu, APIC_ISR, 0x45) and vec_bit(vcpu, APIC_ISR, 0x31)
    assert rd(vcpu, APIC_PROCPRI) == 0x40
    wr(vcpu, APIC_EOI, 0)
    wr(vcpu, APIC_EOI, 0)
    wr(vcpu, APIC_EOI, 0)                                       # nothing in service: no effect
    assert lapic.apic_find_highest_isr(vcpu.arch.apic) == -1


def test_self_ipi_goes_irr_then_isr_on_acceptance(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    wr(vcpu, APIC_ICR, 0x40000 | 0x62)                          # shorthand self, fixed
    assert vec_bit(vcpu, APIC_IRR, 0x62) and not vec_bit(vcpu, APIC_TMR, 0x62)
    assert rd(vcpu, APIC_ICR) == 0x40062                        # delivery status (busy) clear
    assert lapic.kvm_apic_has_interrupt(vcpu) == 0x62
    assert lapic.kvm_get_apic_interrupt(vcpu) == 0x62
    assert not vec_bit(vcpu, APIC_IRR, 0x62) and vec_bit(vcpu, APIC_ISR, 0x62)
    assert rd(vcpu, APIC_PROCPRI) == 0x60
    assert lapic.kvm_apic_has_interrupt(vcpu) == -1


def test_tpr_blocks_a_pending_vector_of_its_class_or_lower(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    wr(vcpu, APIC_ICR, 0x40000 | 0x62)
    wr(vcpu, APIC_TASKPRI, 0x60)
    assert lapic.kvm_apic_has_interrupt(vcpu) == -1
    wr(vcpu, APIC_TASKPRI, 0x5F)
    assert lapic.kvm_apic_has_interrupt(vcpu) == 0x62


def test_software_disabled_apic_drops_fixed_interrupts(vcpu: KvmVcpu) -> None:
    wr(vcpu, APIC_ICR, 0x40000 | 0x62)
    assert not vec_bit(vcpu, APIC_IRR, 0x62)


@pytest.mark.parametrize("icr2,icr,delivered", [
    (0x0000_0000, 0x0000_0070, True),      # physical destination 0: us
    (0xFF00_0000, 0x0000_0070, True),      # physical broadcast
    (0x0500_0000, 0x0000_0070, False),     # physical 5: nobody
    (0x0000_0000, 0x000C_0070, False),     # all but self
    (0x0000_0000, 0x0008_0070, True),      # all including self
    (0x0100_0000, 0x0000_0870, True),      # logical, flat, LDR bit 0
    (0x0200_0000, 0x0000_0870, False),     # logical, flat, another bit
    (0x0000_0000, 0x0000_8070, False),     # level-triggered deassert: ignored
])
def test_ipi_destinations_with_one_vcpu(vcpu: KvmVcpu, icr2: int, icr: int, delivered: bool) -> None:
    enable(vcpu)
    wr(vcpu, APIC_LDR, 0x0100_0000)
    wr(vcpu, APIC_ICR2, icr2)
    wr(vcpu, APIC_ICR, icr)
    assert vec_bit(vcpu, APIC_IRR, 0x70) == delivered


def test_nmi_ipi_to_self_queues_an_nmi(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    wr(vcpu, APIC_ICR, 0x40000 | 0x400)
    assert vcpu.arch.nmi_queued == 1 and "KVM_REQ_NMI" in vcpu.requests


# ---------------------------------------------------------------- APIC base, x2APIC

@pytest.mark.parametrize("old,new,host,ok", [
    (0xFEE00900, 0xFEE00D00, False, True),     # xAPIC → x2APIC
    (0xFEE00D00, 0xFEE00900, False, False),    # x2APIC → xAPIC: refused for the guest
    (0xFEE00D00, 0xFEE00900, True, True),      # ... allowed for userspace
    (0xFEE00D00, 0xFEE00100, False, True),     # x2APIC → disabled
    (0xFEE00100, 0xFEE00D00, False, False),    # disabled → x2APIC
    (0xFEE00900, 0xFEE00500, False, False),    # x2APIC without enable: invalid
    (0xFEE00900, 0xFEE00901, False, False),    # reserved bit 0
    (0xFEE00900, 0xFEE00B00, False, False),    # reserved bit 9
    (0xFEE00900, 1 << 52 | 0x900, False, False),  # above MAXPHYADDR
])
def test_apic_base_transitions(vcpu: KvmVcpu, old: int, new: int, host: bool, ok: bool) -> None:
    assert lapic.kvm_apic_set_base(vcpu, old, True) == 0
    assert (lapic.kvm_apic_set_base(vcpu, new, host) == 0) == ok
    assert vcpu.arch.apic_base == (new if ok else old)


def test_wrmsr_apic_base_without_irqchip_checks_transitions_too() -> None:
    with SimKvm().create_vm() as vm:
        v = vm.create_vcpu(0).vcpu
        assert msr.kvm_set_msr(v, 0x1B, 0xFEE00D00) == 0
        assert msr.kvm_set_msr(v, 0x1B, 0xFEE00900) == 1
        assert msr.kvm_get_msr(v, 0x1B) == (0, 0xFEE00D00)
        assert msr.kvm_get_msr(v, 0x802)[0] == msr.KVM_MSR_RET_UNSUPPORTED   # no APIC: #GP


def test_x2apic_msrs(vcpu: KvmVcpu) -> None:
    assert msr.kvm_get_msr(vcpu, 0x802) == (1, 0)                    # xAPIC mode: #GP
    assert msr.kvm_set_msr(vcpu, 0x1B, 0xFEE00D00) == 0
    assert not vcpu.hw.vmcs.secondary_vm_exec_control & 1          # no APIC-access page in x2APIC mode
    assert msr.kvm_get_msr(vcpu, 0x802) == (0, 0)                   # x2APIC ID = vcpu_id
    assert msr.kvm_get_msr(vcpu, 0x80D) == (0, 1)                   # LDR: cluster 0, bit 0
    assert msr.kvm_get_msr(vcpu, 0x803) == (0, 0x50014)
    assert msr.kvm_set_msr(vcpu, 0x802, 1) == 1                     # ID read-only
    assert msr.kvm_set_msr(vcpu, 0x80D, 1) == 1                     # LDR read-only
    assert msr.kvm_get_msr(vcpu, 0x80E) == (1, 0)                   # no DFR in x2APIC mode
    assert msr.kvm_get_msr(vcpu, 0x831) == (1, 0)                   # no ICR2
    assert msr.kvm_get_msr(vcpu, 0x80B) == (1, 0)                   # EOI is write-only
    assert msr.kvm_set_msr(vcpu, 0x808, 1 << 32) == 1               # high half reserved
    assert msr.kvm_set_msr(vcpu, 0x828, 1) == 1                     # ESR: only 0 may be written
    assert msr.kvm_set_msr(vcpu, 0x828, 0) == 0
    assert rd(vcpu, APIC_LVR) == 0xFFFF_FFFF                        # the xAPIC page reads ones
    assert msr.kvm_set_msr(vcpu, 0x80F, 0x1FF) == 0
    assert msr.kvm_set_msr(vcpu, 0x83F, 0x100) == 1                 # SELF IPI: reserved bits
    assert msr.kvm_set_msr(vcpu, 0x83F, 0x55) == 0
    assert vec_bit(vcpu, APIC_IRR, 0x55)
    assert msr.kvm_set_msr(vcpu, 0x830, 1 << 20) == 1               # ICR reserved bit
    assert msr.kvm_set_msr(vcpu, 0x830, (5 << 32) | 0x66) == 0      # to x2APIC ID 5: dropped
    assert not vec_bit(vcpu, APIC_IRR, 0x66)
    assert msr.kvm_get_msr(vcpu, 0x830) == (0, (5 << 32) | 0x66)    # one 64-bit register
    assert msr.kvm_set_msr(vcpu, 0x830, (0 << 32) | 0x67) == 0      # to x2APIC ID 0: us
    assert vec_bit(vcpu, APIC_IRR, 0x67)


# ---------------------------------------------------------------- the timer on virtual time

def at(vcpu: KvmVcpu, t: int) -> None:
    """Virtual time t: the vCPU retired t guest instructions (no exit yet, no sleep)."""
    assert vcpu.stat.exits == 0 and vcpu.arch.slept_ns == 0
    vcpu.hw.guest_insns = t


def expire(vcpu: KvmVcpu) -> None:
    """What the VMX-preemption timer exit does once its deadline passed, then vcpu_run's injection."""
    lapic.kvm_lapic_expired_hv_timer(vcpu)
    if lapic.apic_has_pending_timer(vcpu):
        lapic.kvm_inject_apic_timer_irqs(vcpu)


def test_divide_configuration(vcpu: KvmVcpu) -> None:
    for tdcr, div in ((0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32), (0x9, 64), (0xA, 128), (0xB, 1)):
        wr(vcpu, APIC_TDCR, tdcr)
        assert vcpu.arch.apic.divide_count == div


def test_one_shot_counts_down_and_fires_once(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    at(vcpu, 1000)
    wr(vcpu, APIC_TDCR, 0x0)                    # divide by 2: one count = 2 ns
    wr(vcpu, APIC_LVTT, 0x40)
    wr(vcpu, APIC_TMICT, 500)
    assert lapic.kvm_lapic_hv_deadline(vcpu) == 2000
    at(vcpu, 1400)
    assert rd(vcpu, APIC_TMCCT) == 300
    expire(vcpu)                                # early: nothing
    assert not vec_bit(vcpu, APIC_IRR, 0x40)
    at(vcpu, 2000)
    expire(vcpu)
    assert vec_bit(vcpu, APIC_IRR, 0x40)
    assert rd(vcpu, APIC_TMCCT) == 0 and lapic.kvm_lapic_hv_deadline(vcpu) is None


def test_masked_timer_counts_but_delivers_nothing(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    at(vcpu, 0)
    wr(vcpu, APIC_LVTT, 0x10040)
    wr(vcpu, APIC_TMICT, 10)
    at(vcpu, 20)
    expire(vcpu)
    assert lapic.apic_find_highest_irr(vcpu.arch.apic) == -1


def test_periodic_rearms_with_the_minimum_period(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    at(vcpu, 0)
    wr(vcpu, APIC_TDCR, 0xB)
    wr(vcpu, APIC_LVTT, 0x20041)
    wr(vcpu, APIC_TMICT, 1000)                  # 1 us asked, min_timer_period_us (200 us) given
    assert lapic.kvm_lapic_hv_deadline(vcpu) == 200_000
    for n in range(1, 4):
        at(vcpu, n * 200_000)
        expire(vcpu)
        assert vec_bit(vcpu, APIC_IRR, 0x41)
        assert lapic.kvm_get_apic_interrupt(vcpu) == 0x41
        wr(vcpu, APIC_EOI, 0)
        assert lapic.kvm_lapic_hv_deadline(vcpu) == (n + 1) * 200_000
    at(vcpu, 650_000)
    assert rd(vcpu, APIC_TMCCT) == 150_000


def test_tmict_zero_stops_the_timer(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    wr(vcpu, APIC_LVTT, 0x40)
    wr(vcpu, APIC_TMICT, 100)
    wr(vcpu, APIC_TMICT, 0)
    assert lapic.kvm_lapic_hv_deadline(vcpu) is None


def test_tsc_deadline_mode(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    wr(vcpu, APIC_TMICT, 1000)
    wr(vcpu, APIC_LVTT, 0x40042)                # switching mode clears TMICT and stops the timer
    assert rd(vcpu, APIC_TMICT) == 0 and lapic.kvm_lapic_hv_deadline(vcpu) is None
    wr(vcpu, APIC_TMICT, 1000)                  # ignored in TSC-deadline mode
    assert rd(vcpu, APIC_TMICT) == 0 and rd(vcpu, APIC_TMCCT) == 0
    at(vcpu, 100)
    assert msr.kvm_set_msr(vcpu, 0x6E0, 5000) == 0
    assert msr.kvm_get_msr(vcpu, 0x6E0) == (0, 5000)
    assert lapic.kvm_lapic_hv_deadline(vcpu) == 5000
    at(vcpu, 5000)
    expire(vcpu)
    assert vec_bit(vcpu, APIC_IRR, 0x42)
    assert msr.kvm_get_msr(vcpu, 0x6E0) == (0, 0)                   # cleared when it fired
    assert msr.kvm_set_msr(vcpu, 0x6E0, 1) == 0                     # in the past: pending at once
    assert lapic.apic_has_pending_timer(vcpu) == 1


def test_halted_vcpu_sleeps_until_the_deadline(vcpu: KvmVcpu) -> None:
    enable(vcpu)
    at(vcpu, 10)
    wr(vcpu, APIC_LVTT, 0x40)
    wr(vcpu, APIC_TMICT, 1000)
    assert lapic.kvm_lapic_advance_to_deadline(vcpu)
    assert vcpu.hw.guest_insns == 10                             # retired instructions unchanged
    assert vcpu.arch.slept_ns == 2000 and lapic.apic_has_pending_timer(vcpu) == 1
    assert not lapic.kvm_lapic_advance_to_deadline(vcpu)         # one-shot: nothing armed now


def test_ia32_tsc_is_the_virtual_clock_and_deadlines_follow_its_offset(vcpu: KvmVcpu) -> None:
    at(vcpu, 300)
    assert msr.kvm_get_msr(vcpu, 0x10) == (0, 300)
    assert msr.kvm_set_msr(vcpu, 0x10, 1_000_000) == 0
    at(vcpu, 350)
    assert msr.kvm_get_msr(vcpu, 0x10) == (0, 1_000_050)
    enable(vcpu)
    wr(vcpu, APIC_LVTT, 0x40042)
    assert msr.kvm_set_msr(vcpu, 0x6E0, 1_000_150) == 0          # 100 cycles from now
    assert lapic.kvm_lapic_hv_deadline(vcpu) == 450
    assert msr.kvm_set_msr(vcpu, 0x6E0, msr.kvm_get_msr(vcpu, 0x10)[1]) == 0   # "now" (kvm-unit-tests)
    assert lapic.apic_has_pending_timer(vcpu) == 1


def _cpuid1_edx(vcpu: KvmVcpu) -> int:
    return next(e.edx for e in vcpu.arch.cpuid_entries if e.function == 1)


def test_cpuid_apic_bit_follows_the_apic_base_enable(vcpu: KvmVcpu) -> None:
    assert _cpuid1_edx(vcpu) >> 9 & 1
    assert msr.kvm_set_msr(vcpu, 0x1B, 0xFEE00100) == 0          # disabled
    assert not _cpuid1_edx(vcpu) >> 9 & 1
    assert msr.kvm_set_msr(vcpu, 0x1B, 0xFEE00900) == 0
    assert _cpuid1_edx(vcpu) >> 9 & 1


def test_relocated_apic_base_moves_the_mmio_device(vcpu: KvmVcpu) -> None:
    assert msr.kvm_set_msr(vcpu, 0x1B, 0xFEE00100) == 0
    assert msr.kvm_set_msr(vcpu, 0x1B, 0xFED40900) == 0
    bus = vcpu.kvm.buses["KVM_MMIO_BUS"]
    buf = bytearray(4)
    assert bus.read(0xFED40030, 4, buf) == 0 and int.from_bytes(buf, "little") == 0x50014
    assert bus.read(0xFEE00030, 4, buf) != 0                       # nobody at the old base
