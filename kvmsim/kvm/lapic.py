"""Model of arch/x86/kvm/lapic.c: the in-kernel local APIC of KVM_CREATE_IRQCHIP.

struct kvm_lapic keeps its registers in one 4 KiB page, as the kernel does (the layout of the
xAPIC MMIO page); x2APIC MSR 0x800 + n is register n << 4 of the same page.  Time is virtual:
the clock is the vCPU's retired guest instructions (hw.guest_insns), one instruction = one ns =
one TSC cycle (a 1 GHz guest TSC), plus what VM exits cost (VMEXIT_NS each, USERSPACE_EXIT_NS more
for each round trip through the VMM) and the time slept halted, so a
run's timer interrupts land on the same instruction every time.  The timer fires through the VMX
preemption timer while the guest runs (KVM's hv timer, vmx.py handle_preemption_timer) and by
skipping virtual time while the vCPU halts.
Simplified: one vCPU (IPIs reach it or nobody), no APICv, no TPR shadow, no in-kernel IO-APIC
(the PIC is i8259.py, reaching the vCPU through kvm_apic_accept_pic_intr).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvmsim.hw.apicdef import APIC_DEFAULT_PHYS_BASE, MSR_IA32_APICBASE_BSP, MSR_IA32_APICBASE_ENABLE
from kvmsim.hw.vmcs import SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES
from kvmsim.kvm import cpuid
from kvmsim.probe import PROBES, tracepoint

if TYPE_CHECKING:
    from kvmsim.kvm.vcpu import KvmVcpu

EOPNOTSUPP = 95
LAPIC_MMIO_LENGTH = 1 << 12
X2APIC_ENABLE = 1 << 10
MSR_IA32_APICBASE_BASE = ~0xFFF & ((1 << 64) - 1)
APIC_BASE_MSR = 0x800
MSR_IA32_TSC_DEADLINE = 0x6E0

# Register offsets (asm/apicdef.h).
APIC_ID, APIC_LVR, APIC_TASKPRI, APIC_ARBPRI, APIC_PROCPRI, APIC_EOI = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0
APIC_LDR, APIC_DFR, APIC_SPIV, APIC_ISR, APIC_TMR, APIC_IRR, APIC_ESR = 0xD0, 0xE0, 0xF0, 0x100, 0x180, 0x200, 0x280
APIC_LVTCMCI, APIC_ICR, APIC_ICR2 = 0x2F0, 0x300, 0x310
APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT0, APIC_LVT1, APIC_LVTERR = 0x320, 0x330, 0x340, 0x350, 0x360, 0x370
APIC_TMICT, APIC_TMCCT, APIC_TDCR, APIC_SELF_IPI = 0x380, 0x390, 0x3E0, 0x3F0

APIC_VERSION = 0x14                    # an integrated APIC
APIC_LVT_MASKED = 1 << 16
APIC_SEND_PENDING = 1 << 12
APIC_VECTOR_MASK = 0xFF
APIC_MODE_MASK = 0x700
APIC_INPUT_POLARITY, APIC_LVT_REMOTE_IRR, APIC_LVT_LEVEL_TRIGGER = 1 << 13, 1 << 14, 1 << 15
APIC_SPIV_APIC_ENABLED = 1 << 8
APIC_LDR_MASK = 0xFF << 24
APIC_DM_FIXED, APIC_DM_LOWEST, APIC_DM_SMI, APIC_DM_NMI = 0x000, 0x100, 0x200, 0x400
APIC_DM_INIT, APIC_DM_STARTUP, APIC_DM_EXTINT = 0x500, 0x600, 0x700
APIC_DEST_LOGICAL = 1 << 11
APIC_ICR_BUSY = 1 << 12
APIC_INT_ASSERT, APIC_INT_LEVELTRIG = 1 << 14, 1 << 15
APIC_SHORT_MASK = 0xC0000
APIC_DEST_NOSHORT, APIC_DEST_SELF, APIC_DEST_ALLINC, APIC_DEST_ALLBUT = 0, 0x40000, 0x80000, 0xC0000
APIC_LVT_TIMER_ONESHOT, APIC_LVT_TIMER_PERIODIC, APIC_LVT_TIMER_TSCDEADLINE = 0, 1 << 17, 2 << 17
X2APIC_ICR_RESERVED_BITS = (0xFFF << 20) | (3 << 16) | (1 << 13)

LVT_MASK = APIC_LVT_MASKED | APIC_SEND_PENDING | APIC_VECTOR_MASK
LINT_MASK = LVT_MASK | APIC_MODE_MASK | APIC_INPUT_POLARITY | APIC_LVT_REMOTE_IRR | APIC_LVT_LEVEL_TRIGGER
# LVT registers in the kernel's LVT index order, with the bits each one keeps on a write.
LVT_REGS: tuple[tuple[int, int], ...] = (
    (APIC_LVTT, LVT_MASK), (APIC_LVTTHMR, LVT_MASK | APIC_MODE_MASK), (APIC_LVTPC, LVT_MASK | APIC_MODE_MASK),
    (APIC_LVT0, LINT_MASK), (APIC_LVT1, LINT_MASK), (APIC_LVTERR, LVT_MASK),
)
# Simplified: no MCG_CMCI_P in the modelled MCG_CAP, so no LVT CMCI (six LVT entries).
NR_LVT_ENTRIES = len(LVT_REGS)
_LVT_MASKS = dict(LVT_REGS)

APIC_BUS_CYCLE_NS = 1                  # the kernel's default APIC bus cycle
VIRTUAL_TSC_KHZ = 1_000_000            # one retired instruction = one TSC cycle = 1 ns
MIN_TIMER_PERIOD_NS = 200_000          # kvm.min_timer_period_us = 200
# What a VM exit costs in guest TSC cycles, as on VMX hardware under KVM, where the guest TSC runs on
# at the host's rate through the exit: an in-kernel round trip (exit, handler, entry; kvm-unit-tests'
# vmexit cpuid/vmcall) ~1-2k cycles, and one that returns to the VMM (KVM_RUN returns, userspace
# handles the PIO/MMIO, KVM_RUN again; vmexit inl_from_pmtimer) several thousand more.
# Simplified: one figure per path, whatever the handler does (an emulated APIC access costs as a CPUID).
VMEXIT_NS = 1500
USERSPACE_EXIT_NS = 5000


@dataclass
class KvmTimer:
    """struct kvm_timer, its times in virtual ns (retired instructions)."""

    period: int = 0
    target_expiration: int = 0         # 0: not armed
    tscdeadline: int = 0
    timer_mode: int = 0
    timer_mode_mask: int = APIC_LVT_TIMER_PERIODIC
    pending: int = 0


@dataclass
class KvmLapic:
    """struct kvm_lapic."""

    base_address: int = APIC_DEFAULT_PHYS_BASE
    regs: bytearray = field(default_factory=lambda: bytearray(LAPIC_MMIO_LENGTH))
    lapic_timer: KvmTimer = field(default_factory=KvmTimer)
    divide_count: int = 2
    sw_enabled: bool = False
    # The highest vector set in IRR / ISR, None once a write may have changed it (the kernel keeps
    # irr_pending and highest_isr_cache for the same reason: the search runs at every VM entry).
    highest: dict[int, int | None] = field(default_factory=lambda: {APIC_IRR: -1, APIC_ISR: -1})


class ApicMmioDevice:
    """apic_mmio_ops: the APIC as an in-kernel device on the KVM_MMIO_BUS (kvm/iobus.py)."""

    def __init__(self, vcpu: KvmVcpu) -> None:
        self.vcpu = vcpu

    def read(self, addr: int, length: int, buf: bytearray) -> int:
        return apic_mmio_read(self.vcpu, addr, length, buf)

    def write(self, addr: int, length: int, data: bytes) -> int:
        return apic_mmio_write(self.vcpu, addr, length, data)


# ---------------------------------------------------------------- register page

def kvm_lapic_get_reg(apic: KvmLapic, reg: int) -> int:
    return int.from_bytes(apic.regs[reg:reg + 4], "little")


def kvm_lapic_set_reg(apic: KvmLapic, reg: int, val: int) -> None:
    apic.regs[reg:reg + 4] = (val & 0xFFFF_FFFF).to_bytes(4, "little")
    if APIC_ISR <= reg < APIC_IRR + 0x80:
        base = reg & ~0x7F
        if base in apic.highest:
            apic.highest[base] = None


def _vec_reg(base: int, vector: int) -> tuple[int, int]:
    return base + 0x10 * (vector >> 5), 1 << (vector & 31)


def apic_test_vector(apic: KvmLapic, base: int, vector: int) -> bool:
    reg, bit = _vec_reg(base, vector)
    return bool(kvm_lapic_get_reg(apic, reg) & bit)


def _set_vector(apic: KvmLapic, base: int, vector: int, on: bool) -> None:
    reg, bit = _vec_reg(base, vector)
    v = kvm_lapic_get_reg(apic, reg)
    kvm_lapic_set_reg(apic, reg, v | bit if on else v & ~bit)


def _find_highest(apic: KvmLapic, base: int) -> int:
    """apic_search_irr / apic_find_highest_isr: the highest vector set in a 256-bit register, or -1."""
    found = apic.highest[base]
    if found is not None:
        return found
    found = -1
    for i in range(7, -1, -1):
        v = kvm_lapic_get_reg(apic, base + 0x10 * i)
        if v:
            found = i * 32 + v.bit_length() - 1
            break
    apic.highest[base] = found
    return found


def apic_find_highest_irr(apic: KvmLapic) -> int:
    return _find_highest(apic, APIC_IRR)


def apic_find_highest_isr(apic: KvmLapic) -> int:
    return _find_highest(apic, APIC_ISR)


# ---------------------------------------------------------------- modes

def kvm_apic_hw_enabled(vcpu: KvmVcpu) -> bool:
    return bool(vcpu.arch.apic_base & MSR_IA32_APICBASE_ENABLE)


def apic_x2apic_mode(vcpu: KvmVcpu) -> bool:
    return bool(vcpu.arch.apic_base & X2APIC_ENABLE)


def kvm_apic_present(vcpu: KvmVcpu) -> bool:
    return vcpu.arch.apic is not None and kvm_apic_hw_enabled(vcpu)


def apic_enabled(vcpu: KvmVcpu) -> bool:
    """Hardware-enabled (APIC base MSR) and software-enabled (SPIV bit 8)."""
    return kvm_apic_present(vcpu) and vcpu.arch.apic.sw_enabled


LAPIC_MODE_DISABLED, LAPIC_MODE_INVALID = 0, X2APIC_ENABLE
LAPIC_MODE_XAPIC, LAPIC_MODE_X2APIC = MSR_IA32_APICBASE_ENABLE, MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE


def kvm_apic_mode(apic_base: int) -> int:
    return apic_base & (MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE)


def _guest_cpuid_bit(vcpu: KvmVcpu, leaf: int, reg: str, bit: int) -> bool:
    e = cpuid.kvm_find_cpuid_entry_index(vcpu, leaf, 0)
    return e is not None and bool(getattr(e, reg) >> bit & 1)


def _maxphyaddr(vcpu: KvmVcpu) -> int:
    """cpuid_maxphyaddr (cr.py's, which reads the TPR from here: the same lookup, no import cycle)."""
    e = cpuid.kvm_find_cpuid_entry_index(vcpu, 0x80000008, 0)
    return (e.eax & 0xFF) if e is not None and e.eax & 0xFF else 36


def _guest_has_x2apic(vcpu: KvmVcpu) -> bool:
    return _guest_cpuid_bit(vcpu, 1, "ecx", 21)


def _guest_has_tsc_deadline(vcpu: KvmVcpu) -> bool:
    return _guest_cpuid_bit(vcpu, 1, "ecx", 24)


def kvm_apic_set_base(vcpu: KvmVcpu, value: int, host_initiated: bool) -> int:
    """MSR_IA32_APICBASE (guest WRMSR or KVM_SET_SREGS): 1 for reserved bits (above MAXPHYADDR,
    7:0, 9; x2APIC without CPUID.1:ECX.X2APIC), x2APIC with the APIC disabled, and for a guest
    the transitions the SDM forbids: x2APIC → xAPIC, disabled → x2APIC."""
    if vcpu.arch.apic_base == value:
        return 0
    rsvd = (((1 << 64) - 1) ^ ((1 << _maxphyaddr(vcpu)) - 1)) | 0x2FF
    if not _guest_has_x2apic(vcpu):
        rsvd |= X2APIC_ENABLE
    old_mode, new_mode = kvm_apic_mode(vcpu.arch.apic_base), kvm_apic_mode(value)
    if value & rsvd or new_mode == LAPIC_MODE_INVALID:
        return 1
    if not host_initiated:
        if old_mode == LAPIC_MODE_X2APIC and new_mode == LAPIC_MODE_XAPIC:
            return 1
        if old_mode == LAPIC_MODE_DISABLED and new_mode == LAPIC_MODE_X2APIC:
            return 1
    __kvm_apic_set_base(vcpu, value)
    return 0


def kvm_update_cpuid_apic_bit(vcpu: KvmVcpu) -> None:
    """kvm_update_cpuid_runtime: CPUID.1:EDX.APIC (bit 9) follows IA32_APIC_BASE's enable bit
    (a copy of the entry: KVM_SET_CPUID2's caller keeps its own table)."""
    entries = vcpu.arch.cpuid_entries
    for i, e in enumerate(entries):
        if e.function == 1:
            want = bool(vcpu.arch.apic_base & MSR_IA32_APICBASE_ENABLE)
            if bool(e.edx >> 9 & 1) != want:
                e = type(e).from_buffer_copy(e)
                e.edx = (e.edx | 1 << 9) if want else (e.edx & ~(1 << 9))
                entries[i] = e
            return


def __kvm_apic_set_base(vcpu: KvmVcpu, value: int) -> None:
    old = vcpu.arch.apic_base
    vcpu.arch.apic_base = value
    if (old ^ value) & MSR_IA32_APICBASE_ENABLE:
        kvm_update_cpuid_apic_bit(vcpu)
    apic = vcpu.arch.apic
    if apic is None:
        return
    changed = old ^ value
    if changed & MSR_IA32_APICBASE_ENABLE and value & MSR_IA32_APICBASE_ENABLE:
        kvm_apic_set_xapic_id(apic, vcpu.vcpu_id)
    if changed & X2APIC_ENABLE:
        if value & X2APIC_ENABLE:
            kvm_apic_set_x2apic_id(apic, vcpu.vcpu_id)
        elif value & MSR_IA32_APICBASE_ENABLE:
            kvm_apic_set_xapic_id(apic, vcpu.vcpu_id)
    if changed & (MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE):
        _set_virtual_apic_mode(vcpu)
    apic.base_address = value & MSR_IA32_APICBASE_BASE & ((1 << 52) - 1)
    bus = vcpu.kvm.buses["KVM_MMIO_BUS"]
    dev = vcpu.arch.apic_dev
    bus.unregister(dev)
    bus.register(apic.base_address, LAPIC_MMIO_LENGTH, dev)


def _set_virtual_apic_mode(vcpu: KvmVcpu) -> None:
    """vmx_set_virtual_apic_mode: the APIC-access page is virtualized only in xAPIC mode."""
    v = vcpu.hw.vmcs
    if kvm_apic_mode(vcpu.arch.apic_base) == LAPIC_MODE_XAPIC:
        v.secondary_vm_exec_control |= SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES
    else:
        v.secondary_vm_exec_control &= ~SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES


def kvm_apic_set_xapic_id(apic: KvmLapic, id_: int) -> None:
    kvm_lapic_set_reg(apic, APIC_ID, (id_ & 0xFF) << 24)


def kvm_apic_calc_x2apic_ldr(id_: int) -> int:
    return ((id_ >> 4) << 16) | (1 << (id_ & 0xF))


def kvm_apic_set_x2apic_id(apic: KvmLapic, id_: int) -> None:
    kvm_lapic_set_reg(apic, APIC_ID, id_)
    kvm_lapic_set_reg(apic, APIC_LDR, kvm_apic_calc_x2apic_ldr(id_))


# ---------------------------------------------------------------- creation and reset

def kvm_create_lapic(vcpu: KvmVcpu) -> int:
    """kvm_arch_vcpu_create: an APIC only when the VM has an in-kernel irqchip."""
    if not vcpu.kvm.irqchip:
        return 0
    vcpu.arch.apic = KvmLapic()
    vcpu.arch.apic_dev = ApicMmioDevice(vcpu)
    vcpu.arch.apic_base = MSR_IA32_APICBASE_ENABLE   # the full reset value comes from kvm_lapic_reset
    return 0


def kvm_lapic_reset(vcpu: KvmVcpu, init_event: bool = False) -> None:
    """The APIC's RESET state: base MSR (BSP for vCPU 0), ID, version, LVTs masked, DFR all ones,
    SPIV 0xff (software-disabled), everything else zero."""
    if not init_event:
        value = APIC_DEFAULT_PHYS_BASE | MSR_IA32_APICBASE_ENABLE
        if vcpu.vcpu_id == 0:
            value |= MSR_IA32_APICBASE_BSP
        __kvm_apic_set_base(vcpu, value)
    apic = vcpu.arch.apic
    if apic is None:
        return
    cancel_apic_timer(apic)
    if not init_event:
        kvm_apic_set_xapic_id(apic, vcpu.vcpu_id)
    kvm_apic_set_version(vcpu)
    for reg, _mask in LVT_REGS:
        kvm_lapic_set_reg(apic, reg, APIC_LVT_MASKED)
    apic_update_lvtt(vcpu)
    # KVM_X86_QUIRK_LINT0_REENABLED (default on): the BSP's LINT0 starts as unmasked ExtINT.
    if vcpu.vcpu_id == 0:
        kvm_lapic_set_reg(apic, APIC_LVT0, APIC_DM_EXTINT)
    kvm_lapic_set_reg(apic, APIC_DFR, 0xFFFF_FFFF)
    apic_set_spiv(apic, 0xFF)
    kvm_lapic_set_reg(apic, APIC_TASKPRI, 0)
    if not apic_x2apic_mode(vcpu):
        kvm_lapic_set_reg(apic, APIC_LDR, 0)
    for reg in (APIC_ESR, APIC_ICR, APIC_ICR2, APIC_TDCR, APIC_TMICT):
        kvm_lapic_set_reg(apic, reg, 0)
    for i in range(8):
        for base in (APIC_IRR, APIC_ISR, APIC_TMR):
            kvm_lapic_set_reg(apic, base + 0x10 * i, 0)
    update_divide_count(apic)
    apic.lapic_timer.pending = 0
    apic_update_ppr(vcpu)


def kvm_lapic_after_set_cpuid(vcpu: KvmVcpu) -> None:
    """kvm_vcpu_after_set_cpuid: TSC-deadline mode exists only if the guest's CPUID has it."""
    apic = vcpu.arch.apic
    if apic is None:
        return
    apic.lapic_timer.timer_mode_mask = (3 << 17) if _guest_has_tsc_deadline(vcpu) else APIC_LVT_TIMER_PERIODIC
    kvm_apic_set_version(vcpu)


def kvm_apic_set_version(vcpu: KvmVcpu) -> None:
    """Version 0x14 with the number of LVT entries minus one in bits 23:16.  No directed EOI:
    the IO-APIC is in the kernel with KVM_CREATE_IRQCHIP."""
    kvm_lapic_set_reg(vcpu.arch.apic, APIC_LVR, APIC_VERSION | ((NR_LVT_ENTRIES - 1) << 16))


def apic_set_spiv(apic: KvmLapic, val: int) -> None:
    kvm_lapic_set_reg(apic, APIC_SPIV, val)
    apic.sw_enabled = bool(val & APIC_SPIV_APIC_ENABLED)


# ---------------------------------------------------------------- priorities, IRR/ISR, EOI

def __apic_update_ppr(vcpu: KvmVcpu) -> int:
    """PPR = TPR if TPR[7:4] >= ISRV[7:4], else ISRV[7:4] << 4 (SDM 10.8.3.1)."""
    apic = vcpu.arch.apic
    tpr = kvm_lapic_get_reg(apic, APIC_TASKPRI)
    isrv = max(apic_find_highest_isr(apic), 0)
    ppr = tpr & 0xFF if (tpr & 0xF0) >= (isrv & 0xF0) else isrv & 0xF0
    kvm_lapic_set_reg(apic, APIC_PROCPRI, ppr)
    return ppr


def apic_update_ppr(vcpu: KvmVcpu) -> None:
    old = kvm_lapic_get_reg(vcpu.arch.apic, APIC_PROCPRI)
    ppr = __apic_update_ppr(vcpu)
    if ppr < old and apic_has_interrupt_for_ppr(vcpu, ppr) != -1:
        vcpu.requests.add("KVM_REQ_EVENT")


def apic_has_interrupt_for_ppr(vcpu: KvmVcpu, ppr: int) -> int:
    highest = apic_find_highest_irr(vcpu.arch.apic)
    if highest == -1 or (highest & 0xF0) <= ppr:
        return -1
    return highest


def apic_set_tpr(vcpu: KvmVcpu, tpr: int) -> None:
    kvm_lapic_set_reg(vcpu.arch.apic, APIC_TASKPRI, tpr)
    apic_update_ppr(vcpu)


def kvm_lapic_set_tpr(vcpu: KvmVcpu, cr8: int) -> None:
    """MOV to CR8 with the APIC in the kernel: TPR[7:4] = CR8[3:0]."""
    apic_set_tpr(vcpu, (cr8 & 0x0F) << 4)


def kvm_lapic_get_cr8(vcpu: KvmVcpu) -> int:
    return (kvm_lapic_get_reg(vcpu.arch.apic, APIC_TASKPRI) & 0xF0) >> 4


def apic_set_eoi(vcpu: KvmVcpu) -> int:
    """EOI: the highest in-service vector leaves the ISR (none: nothing happens)."""
    apic = vcpu.arch.apic
    vector = apic_find_highest_isr(apic)
    if PROBES.enabled:
        tracepoint("kvm_eoi", apicid=vcpu.vcpu_id, vector=vector)
    if vector == -1:
        return vector
    _set_vector(apic, APIC_ISR, vector, False)
    apic_update_ppr(vcpu)
    # Simplified: the in-kernel IO-APIC's EOI (kvm_ioapic_send_eoi) is not modelled.
    vcpu.requests.add("KVM_REQ_EVENT")
    return vector


def __apic_accept_irq(vcpu: KvmVcpu, delivery_mode: int, vector: int, level: bool, trig_mode: bool) -> int:
    """Fixed/lowest-priority: IRR (and TMR for level) if the APIC is enabled; NMI: an NMI.
    Simplified: SMI, INIT and SIPI to the one vCPU are dropped (no SMM, no AP bring-up)."""
    apic = vcpu.arch.apic
    if delivery_mode in (APIC_DM_FIXED, APIC_DM_LOWEST):
        if trig_mode and not level:
            return 0
        if not apic_enabled(vcpu):
            return 0
        _set_vector(apic, APIC_TMR, vector, bool(trig_mode))
        _set_vector(apic, APIC_IRR, vector, True)
        vcpu.requests.add("KVM_REQ_EVENT")
        return 1
    if delivery_mode == APIC_DM_NMI:
        vcpu.arch.nmi_queued += 1          # kvm_inject_nmi
        vcpu.requests.add("KVM_REQ_NMI")
        return 1
    return 0


def kvm_apic_match_dest(vcpu: KvmVcpu, shorthand: int, dest: int, dest_mode_logical: bool) -> bool:
    """The only vCPU is both source and (possible) target."""
    if shorthand == APIC_DEST_SELF or shorthand == APIC_DEST_ALLINC:
        return True
    if shorthand == APIC_DEST_ALLBUT:
        return False
    apic = vcpu.arch.apic
    x2 = apic_x2apic_mode(vcpu)
    if not dest_mode_logical:
        broadcast = 0xFFFF_FFFF if x2 else 0xFF
        my_id = kvm_lapic_get_reg(apic, APIC_ID) if x2 else kvm_lapic_get_reg(apic, APIC_ID) >> 24
        return dest == broadcast or dest == my_id
    ldr = kvm_lapic_get_reg(apic, APIC_LDR)
    if x2:
        return dest == 0xFFFF_FFFF or ((dest >> 16) == (ldr >> 16) and bool(dest & ldr & 0xFFFF))
    mda, ldr8 = dest & 0xFF, ldr >> 24
    if mda == 0xFF:
        return True
    if kvm_lapic_get_reg(apic, APIC_DFR) >> 28 == 0xF:          # flat model
        return bool(mda & ldr8)
    return (mda >> 4) == (ldr8 >> 4) and bool(mda & ldr8 & 0xF)   # cluster model


def kvm_apic_send_ipi(vcpu: KvmVcpu, icr_low: int, icr_high: int) -> None:
    """kvm_irq_delivery_to_apic with one vCPU: the IPI reaches it if it matches, else nobody."""
    dest = icr_high if apic_x2apic_mode(vcpu) else icr_high >> 24
    if PROBES.enabled:
        tracepoint("kvm_apic_ipi", icr_low=icr_low, dest_id=dest)
    if kvm_apic_match_dest(vcpu, icr_low & APIC_SHORT_MASK, dest, bool(icr_low & APIC_DEST_LOGICAL)):
        __apic_accept_irq(vcpu, icr_low & APIC_MODE_MASK, icr_low & APIC_VECTOR_MASK,
                          bool(icr_low & APIC_INT_ASSERT), bool(icr_low & APIC_INT_LEVELTRIG))


def kvm_apic_local_deliver(vcpu: KvmVcpu, lvt_reg: int) -> int:
    apic = vcpu.arch.apic
    reg = kvm_lapic_get_reg(apic, lvt_reg)
    if kvm_apic_hw_enabled(vcpu) and not reg & APIC_LVT_MASKED:
        return __apic_accept_irq(vcpu, reg & APIC_MODE_MASK, reg & APIC_VECTOR_MASK, True,
                                 bool(reg & APIC_LVT_LEVEL_TRIGGER))
    return 0


def kvm_apic_accept_pic_intr(vcpu: KvmVcpu) -> bool:
    """The PIC's INTR reaches this vCPU: its APIC is hardware-disabled (the pin goes straight to the
    CPU), or LVT0 is unmasked in ExtINT mode (virtual-wire; the BSP's reset state in KVM)."""
    if vcpu.arch.apic is None:
        return False
    if not kvm_apic_hw_enabled(vcpu):
        return True
    lvt0 = kvm_lapic_get_reg(vcpu.arch.apic, APIC_LVT0)
    return not lvt0 & APIC_LVT_MASKED and lvt0 & APIC_MODE_MASK == APIC_DM_EXTINT


def kvm_apic_has_interrupt(vcpu: KvmVcpu) -> int:
    """The vector the APIC would deliver now (above the PPR), or -1."""
    if not kvm_apic_present(vcpu):
        return -1
    return apic_has_interrupt_for_ppr(vcpu, __apic_update_ppr(vcpu))


def kvm_apic_ack_interrupt(vcpu: KvmVcpu, vector: int) -> None:
    """INTA: the vector moves from the IRR to the ISR, and the PPR rises."""
    apic = vcpu.arch.apic
    _set_vector(apic, APIC_IRR, vector, False)
    _set_vector(apic, APIC_ISR, vector, True)
    __apic_update_ppr(vcpu)


def kvm_get_apic_interrupt(vcpu: KvmVcpu) -> int:
    vector = kvm_apic_has_interrupt(vcpu)
    if vector == -1:
        return -1
    kvm_apic_ack_interrupt(vcpu, vector)
    return vector


# ---------------------------------------------------------------- the timer

def _now(vcpu: KvmVcpu) -> int:
    return kvm_virtual_ns(vcpu)


def _not_retiring_ns(vcpu: KvmVcpu) -> int:
    """Virtual time in which no guest instruction retires: halted sleep, the VM exits so far, the
    round trips through userspace and the silicon's stalls (hw.stall: serializing CR writes)."""
    arch = vcpu.arch
    return (arch.slept_ns + vcpu.stat.exits * VMEXIT_NS + arch.userspace_trips * USERSPACE_EXIT_NS
            + vcpu.hw.stall_cycles)


def kvm_virtual_ns(vcpu: KvmVcpu) -> int:
    """The vCPU's virtual clock, in ns: retired guest instructions, time slept halted, exits."""
    return vcpu.hw.guest_insns + _not_retiring_ns(vcpu)


def kvm_read_l1_tsc(vcpu: KvmVcpu) -> int:
    """The guest TSC (IA32_TSC): the virtual clock at 1 GHz plus the offset a TSC write set.
    Simplified: a native RDTSC still reads the engine's counter, not this one."""
    return (kvm_virtual_ns(vcpu) * VIRTUAL_TSC_KHZ // 1_000_000 + vcpu.arch.tsc_offset) & ((1 << 64) - 1)


def kvm_tsc_offset(vcpu: KvmVcpu) -> int:
    """TSC_OFFSET for the silicon, whose TSC counts retired instructions only: the guest's offset
    plus the virtual time that passed without retiring any (the guest TSC runs on meanwhile)."""
    return vcpu.arch.tsc_offset + _not_retiring_ns(vcpu)


def kvm_write_l1_tsc(vcpu: KvmVcpu, value: int) -> None:
    """WRMSR IA32_TSC: the offset that makes the guest TSC read `value` now (kvm_synchronize_tsc)."""
    vcpu.arch.tsc_offset = value - kvm_virtual_ns(vcpu) * VIRTUAL_TSC_KHZ // 1_000_000


def apic_lvtt_mode(vcpu: KvmVcpu) -> int:
    return vcpu.arch.apic.lapic_timer.timer_mode


def update_divide_count(apic: KvmLapic) -> None:
    """TDCR bits 0, 1 and 3 select divide by 2, 4, ... 128, or 1 (0b1011)."""
    tdcr = kvm_lapic_get_reg(apic, APIC_TDCR) & 0xF
    apic.divide_count = 1 << ((((tdcr & 3) | ((tdcr & 8) >> 1)) + 1) & 7)


def cancel_apic_timer(apic: KvmLapic) -> None:
    apic.lapic_timer.target_expiration = 0
    apic.lapic_timer.pending = 0


def apic_update_lvtt(vcpu: KvmVcpu) -> None:
    """A switch into or out of TSC-deadline mode stops the timer and clears its count."""
    apic = vcpu.arch.apic
    t = apic.lapic_timer
    mode = kvm_lapic_get_reg(apic, APIC_LVTT) & t.timer_mode_mask
    if t.timer_mode != mode:
        if (t.timer_mode == APIC_LVT_TIMER_TSCDEADLINE) != (mode == APIC_LVT_TIMER_TSCDEADLINE):
            cancel_apic_timer(apic)
            kvm_lapic_set_reg(apic, APIC_TMICT, 0)
            t.period = t.tscdeadline = 0
        t.timer_mode = mode
        _limit_periodic(t)


def _limit_periodic(t: KvmTimer) -> None:
    if t.timer_mode == APIC_LVT_TIMER_PERIODIC and t.period and t.period < MIN_TIMER_PERIOD_NS:
        t.period = MIN_TIMER_PERIOD_NS


def start_apic_timer(vcpu: KvmVcpu) -> None:
    """One-shot/periodic: arm for TMICT * bus cycle * divider ns from now (a zero count disarms);
    TSC-deadline: arm for the deadline (0 disarms; one already passed fires at once)."""
    apic = vcpu.arch.apic
    t = apic.lapic_timer
    t.pending = 0
    now = _now(vcpu)
    if t.timer_mode == APIC_LVT_TIMER_TSCDEADLINE:
        if not t.tscdeadline:
            t.target_expiration = 0
            return
        t.target_expiration = max((t.tscdeadline - vcpu.arch.tsc_offset) * 1_000_000 // VIRTUAL_TSC_KHZ, now)
    else:
        t.period = kvm_lapic_get_reg(apic, APIC_TMICT) * APIC_BUS_CYCLE_NS * apic.divide_count
        _limit_periodic(t)
        if not t.period:
            t.target_expiration = 0
            return
        t.target_expiration = now + t.period
    if t.target_expiration <= now:
        apic_timer_expired(vcpu)


def apic_timer_expired(vcpu: KvmVcpu) -> None:
    """The deadline passed: one pending tick, delivered by kvm_inject_apic_timer_irqs; a periodic
    timer re-arms for the next period, the others stop."""
    t = vcpu.arch.apic.lapic_timer
    if t.pending:
        return
    t.pending += 1
    if t.timer_mode == APIC_LVT_TIMER_PERIODIC and t.period:
        t.target_expiration += t.period
    else:
        t.target_expiration = 0


def kvm_lapic_hv_deadline(vcpu: KvmVcpu) -> int | None:
    """The retired-instruction count the VMX-preemption timer must fire at (vmx_set_hv_timer), or None."""
    apic = vcpu.arch.apic
    if apic is None or not apic.lapic_timer.target_expiration:
        return None
    return apic.lapic_timer.target_expiration - _not_retiring_ns(vcpu)


def kvm_lapic_expired_hv_timer(vcpu: KvmVcpu) -> None:
    """The preemption timer fired (or virtual time reached the deadline while halted)."""
    apic = vcpu.arch.apic
    t = apic.lapic_timer
    if t.target_expiration and _now(vcpu) >= t.target_expiration:
        apic_timer_expired(vcpu)


def kvm_lapic_advance_to_deadline(vcpu: KvmVcpu) -> bool:
    """A halted vCPU (kvm_vcpu_block) sleeps until its timer: virtual time jumps to the deadline.
    False if no timer is armed (nothing would ever wake it)."""
    apic = vcpu.arch.apic
    deadline = apic.lapic_timer.target_expiration
    if not deadline:
        return False
    vcpu.arch.slept_ns += max(deadline - _now(vcpu), 0)
    kvm_lapic_expired_hv_timer(vcpu)
    return True


def apic_has_pending_timer(vcpu: KvmVcpu) -> int:
    apic = vcpu.arch.apic
    if apic is not None and apic_enabled(vcpu) and not kvm_lapic_get_reg(apic, APIC_LVTT) & APIC_LVT_MASKED:
        return apic.lapic_timer.pending
    return 0


def kvm_inject_apic_timer_irqs(vcpu: KvmVcpu) -> None:
    t = vcpu.arch.apic.lapic_timer
    if t.pending > 0:
        kvm_apic_local_deliver(vcpu, APIC_LVTT)
        if t.timer_mode == APIC_LVT_TIMER_TSCDEADLINE:
            t.tscdeadline = 0
        t.pending = 0


def apic_get_tmcct(vcpu: KvmVcpu) -> int:
    apic = vcpu.arch.apic
    t = apic.lapic_timer
    if kvm_lapic_get_reg(apic, APIC_TMICT) == 0 or t.period == 0 or not t.target_expiration:
        return 0
    remaining = max(t.target_expiration - _now(vcpu), 0) % t.period
    return remaining // (APIC_BUS_CYCLE_NS * apic.divide_count)


def kvm_get_lapic_tscdeadline_msr(vcpu: KvmVcpu) -> int:
    if not kvm_apic_present(vcpu) or apic_lvtt_mode(vcpu) != APIC_LVT_TIMER_TSCDEADLINE:
        return 0
    return vcpu.arch.apic.lapic_timer.tscdeadline


def kvm_set_lapic_tscdeadline_msr(vcpu: KvmVcpu, data: int) -> None:
    if not kvm_apic_present(vcpu) or apic_lvtt_mode(vcpu) != APIC_LVT_TIMER_TSCDEADLINE:
        return
    vcpu.arch.apic.lapic_timer.tscdeadline = data
    start_apic_timer(vcpu)


# ---------------------------------------------------------------- register read/write

_ALWAYS_READABLE = frozenset({APIC_ID, APIC_LVR, APIC_TASKPRI, APIC_PROCPRI, APIC_LDR, APIC_SPIV, APIC_ESR,
                              APIC_ICR, APIC_TMICT, APIC_TMCCT, APIC_TDCR}
                             | {r for r, _ in LVT_REGS}
                             | {b + 0x10 * i for b in (APIC_ISR, APIC_TMR, APIC_IRR) for i in range(8)})
_XAPIC_ONLY_READABLE = frozenset({APIC_ARBPRI, APIC_DFR, APIC_ICR2})


def kvm_lapic_readable(vcpu: KvmVcpu, reg: int) -> bool:
    """kvm_lapic_readable_reg_mask: reserved and write-only registers read as an error."""
    return reg in _ALWAYS_READABLE or (reg in _XAPIC_ONLY_READABLE and not apic_x2apic_mode(vcpu))


def __apic_read(vcpu: KvmVcpu, offset: int) -> int:
    apic = vcpu.arch.apic
    if offset == APIC_ARBPRI:
        return 0
    if offset == APIC_TMCCT:
        return 0 if apic_lvtt_mode(vcpu) == APIC_LVT_TIMER_TSCDEADLINE else apic_get_tmcct(vcpu)
    if offset == APIC_PROCPRI:
        apic_update_ppr(vcpu)
    return kvm_lapic_get_reg(apic, offset)


def kvm_lapic_reg_read(vcpu: KvmVcpu, offset: int, length: int) -> int | None:
    """The bytes' value, or None for a misaligned or unreadable register."""
    align = offset & 0xF
    if align + length > 4:
        return None
    reg = offset & ~0xF
    if offset > 0x3F0 or not kvm_lapic_readable(vcpu, reg):
        return None
    val = __apic_read(vcpu, reg)
    if PROBES.enabled:
        tracepoint("kvm_apic", rw=0, reg=offset, val=val)
    return (val >> (8 * align)) & ((1 << (8 * length)) - 1)


def kvm_lapic_reg_write(vcpu: KvmVcpu, reg: int, val: int) -> int:
    """One register write with the masks lapic.c applies; 1 for a register that cannot be written
    (in x2APIC mode: #GP)."""
    apic = vcpu.arch.apic
    x2 = apic_x2apic_mode(vcpu)
    if PROBES.enabled:
        tracepoint("kvm_apic", rw=1, reg=reg, val=val)
    if reg == APIC_ID:
        if x2:
            return 1
        kvm_apic_set_xapic_id(apic, val >> 24)
    elif reg == APIC_TASKPRI:
        apic_set_tpr(vcpu, val & 0xFF)
    elif reg == APIC_EOI:
        apic_set_eoi(vcpu)
    elif reg == APIC_LDR:
        if x2:
            return 1
        kvm_lapic_set_reg(apic, APIC_LDR, val & APIC_LDR_MASK)
    elif reg == APIC_DFR:
        if x2:
            return 1
        kvm_lapic_set_reg(apic, APIC_DFR, val | 0x0FFF_FFFF)
    elif reg == APIC_SPIV:
        apic_set_spiv(apic, val & 0x3FF)
        if not val & APIC_SPIV_APIC_ENABLED:
            for lvt, _mask in LVT_REGS:
                kvm_lapic_set_reg(apic, lvt, kvm_lapic_get_reg(apic, lvt) | APIC_LVT_MASKED)
            apic_update_lvtt(vcpu)
            apic.lapic_timer.pending = 0
    elif reg == APIC_ICR:
        val &= ~APIC_ICR_BUSY
        kvm_apic_send_ipi(vcpu, val, kvm_lapic_get_reg(apic, APIC_ICR2))
        kvm_lapic_set_reg(apic, APIC_ICR, val)
    elif reg == APIC_ICR2:
        if x2:
            return 1
        kvm_lapic_set_reg(apic, APIC_ICR2, val & 0xFF00_0000)
    elif reg in (APIC_LVTTHMR, APIC_LVTPC, APIC_LVT0, APIC_LVT1, APIC_LVTERR):
        if not apic.sw_enabled:
            val |= APIC_LVT_MASKED
        kvm_lapic_set_reg(apic, reg, val & _LVT_MASKS[reg])
    elif reg == APIC_LVTT:
        if not apic.sw_enabled:
            val |= APIC_LVT_MASKED
        kvm_lapic_set_reg(apic, APIC_LVTT, val & (_LVT_MASKS[APIC_LVTT] | apic.lapic_timer.timer_mode_mask))
        apic_update_lvtt(vcpu)
    elif reg == APIC_TMICT:
        if apic_lvtt_mode(vcpu) == APIC_LVT_TIMER_TSCDEADLINE:
            return 0
        cancel_apic_timer(apic)
        kvm_lapic_set_reg(apic, APIC_TMICT, val)
        start_apic_timer(vcpu)
    elif reg == APIC_TDCR:
        old = apic.divide_count
        kvm_lapic_set_reg(apic, APIC_TDCR, val & 0xB)
        update_divide_count(apic)
        t = apic.lapic_timer
        if apic.divide_count != old and t.period and t.target_expiration:
            # update_target_expiration: the time left scales with the new divider.
            now = _now(vcpu)
            left = max(t.target_expiration - now, 0) * apic.divide_count // old
            t.period = kvm_lapic_get_reg(apic, APIC_TMICT) * APIC_BUS_CYCLE_NS * apic.divide_count
            _limit_periodic(t)
            t.target_expiration = now + left
    elif reg == APIC_ESR:
        if x2 and val != 0:
            return 1
    elif reg == APIC_SELF_IPI:
        if not x2 or val & ~APIC_VECTOR_MASK:
            return 1
        kvm_apic_send_ipi(vcpu, APIC_DEST_SELF | val, 0)
    else:
        return 1
    return 0


def apic_mmio_read(vcpu: KvmVcpu, address: int, length: int, buf: bytearray) -> int:
    """The xAPIC page: a disabled or x2APIC-mode APIC reads as all ones (KVM_X86_QUIRK_LAPIC_MMIO_HOLE,
    default on); an unreadable register reads as zero."""
    apic = vcpu.arch.apic
    if not apic.base_address <= address < apic.base_address + LAPIC_MMIO_LENGTH:
        return -EOPNOTSUPP
    if not kvm_apic_hw_enabled(vcpu) or apic_x2apic_mode(vcpu):
        buf[:length] = b"\xff" * length
        return 0
    val = kvm_lapic_reg_read(vcpu, address - apic.base_address, length)
    if val is not None and length in (1, 2, 4):
        buf[:length] = val.to_bytes(length, "little")
    else:
        buf[:length] = bytes(length)
    return 0


def apic_mmio_write(vcpu: KvmVcpu, address: int, length: int, data: bytes) -> int:
    """Only aligned 32-bit writes reach a register (SDM 10.4.1); the rest are dropped."""
    apic = vcpu.arch.apic
    if not apic.base_address <= address < apic.base_address + LAPIC_MMIO_LENGTH:
        return -EOPNOTSUPP
    if not kvm_apic_hw_enabled(vcpu) or apic_x2apic_mode(vcpu):
        return 0
    offset = address - apic.base_address
    if length != 4 or offset & 0xF:
        return 0
    kvm_lapic_reg_write(vcpu, offset & 0xFF0, int.from_bytes(bytes(data[:4]), "little"))
    return 0


def kvm_x2apic_msr_read(vcpu: KvmVcpu, msr: int) -> tuple[int, int]:
    """(0, value) or (1, 0) for #GP: not in x2APIC mode, or an unreadable register.  The ICR is
    one 64-bit register in x2APIC mode."""
    if vcpu.arch.apic is None or not apic_x2apic_mode(vcpu):
        return 1, 0
    reg = (msr - APIC_BASE_MSR) << 4
    if reg == APIC_ICR:
        apic = vcpu.arch.apic
        return 0, kvm_lapic_get_reg(apic, APIC_ICR) | kvm_lapic_get_reg(apic, APIC_ICR2) << 32
    val = kvm_lapic_reg_read(vcpu, reg, 4)
    return (1, 0) if val is None else (0, val)


def kvm_x2apic_msr_write(vcpu: KvmVcpu, msr: int, data: int) -> int:
    """0, or 1 for #GP (not x2APIC mode, reserved bits, a read-only register)."""
    if vcpu.arch.apic is None or not apic_x2apic_mode(vcpu):
        return 1
    reg = (msr - APIC_BASE_MSR) << 4
    apic = vcpu.arch.apic
    if reg == APIC_ICR:
        if data & X2APIC_ICR_RESERVED_BITS:
            return 1
        data &= ~APIC_ICR_BUSY
        kvm_apic_send_ipi(vcpu, data & 0xFFFF_FFFF, data >> 32)
        kvm_lapic_set_reg(apic, APIC_ICR, data & 0xFFFF_FFFF)
        kvm_lapic_set_reg(apic, APIC_ICR2, data >> 32)
        return 0
    if data >> 32:
        return 1
    return kvm_lapic_reg_write(vcpu, reg, data)
