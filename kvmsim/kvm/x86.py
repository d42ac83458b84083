"""Model of arch/x86/kvm/x86.c: KVM_RUN, the vcpu_run loop, event injection, the vendor's kvm_x86_ops.

Port I/O lives in pio.py, MSRs in msr.py, hypercalls in hypercall.py, control registers in
cr.py, exception queueing and kvm_skip_emulated_instruction in x86_exception.py and the emulator
entry (x86_emulate_instruction) in x86_emulate.py; all are x86.c in the kernel.  The vendor
module (vmx.py) is reached only through kvm_x86_ops, installed by kvm_x86_vendor_init.
"""

from __future__ import annotations

from kvmsim.hw.vmcs import EXCEPTIONS_WITH_ERROR_CODE
from kvmsim.kvm import cr, i8254, i8259, lapic, mmu_shadow
from kvmsim.hw.vmcs import Vector
from kvmsim.kvm.kvm_cache_regs import EFLAGS_IF, EFLAGS_RF
from kvmsim.kvm.kvm_x86_ops import KvmX86Ops, kvm_ops_update, kvm_x86_ops
from kvmsim.kvm.vcpu import KvmVcpu
# x86.c's exception queueing, one module down so that cr.py and cpuid.py can use it too;
# named here as well for callers that know them as x86.c's (the debugger's exception command).
from kvmsim.kvm.x86_exception import kvm_queue_exception, kvm_queue_exception_e  # noqa: F401
from kvmsim.kvm.x86_exception import (EXCPT_FAULT, exception_type, kvm_deliver_exception_payload,
                                      kvm_skip_emulated_instruction)
from kvmsim.probe import PROBES, kfunc, tracepoint
from kvmsim.uapi import KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, KvmExit, KvmInternalError, KvmSregs

EINTR = 4
KVM_GUESTDBG_BLOCKIRQ = 0x00100000
EINVAL = 22
_KVM_EXIT_UNKNOWN = int(KvmExit.UNKNOWN)


# ---------------------------------------------------------------- vendor module

def kvm_x86_vendor_init(ops: KvmX86Ops) -> None:
    """The vendor module's init (vmx.py vmx_init) hands over its kvm_x86_ops; loading the same
    vendor again changes nothing (the kernel refuses a second vendor with -EEXIST).
    Simplified: no hardware setup, no capability probing."""
    if kvm_x86_ops.name != ops.name:
        kvm_ops_update(ops)


# ---------------------------------------------------------------- KVM_RUN

@kfunc()
def kvm_arch_vcpu_ioctl_run(vcpu: KvmVcpu) -> int:
    """KVM_RUN, steps numbered as reference §8.1.

    1. run->flags = 0.  6. A pending complete_userspace_io runs first (cleared before the
    call).  7. immediate_exit → -EINTR (after the cui).  9. vcpu_run.  10. post_kvm_run_save.
    """
    run = vcpu.run
    run.flags = 0
    vcpu.wants_to_run = not run.immediate_exit
    arch = vcpu.arch
    if vcpu.stat.exits:
        arch.userspace_trips += 1      # the VMM's share of the virtual clock (lapic._not_retiring_ns)
    if not cr.lapic_in_kernel(vcpu) and cr.kvm_set_cr8(vcpu, run.cr8):   # 4: re-sync the TPR
        return _out(vcpu, -EINVAL)
    if (cui := arch.complete_userspace_io) is not None:
        arch.complete_userspace_io = None
        r = cui(vcpu)
        if r <= 0:
            return _out(vcpu, r)
    if not vcpu.wants_to_run:   # run->exit_reason is left as it was (only a signal sets KVM_EXIT_INTR)
        return _out(vcpu, -EINTR)
    return _out(vcpu, vcpu_run(vcpu))


def _out(vcpu: KvmVcpu, r: int) -> int:
    post_kvm_run_save(vcpu)
    if PROBES.enabled:
        tracepoint("kvm_userspace_exit", reason=vcpu.run.exit_reason, errno=r)
    return r


def post_kvm_run_save(vcpu: KvmVcpu) -> None:
    """What userspace reads after every KVM_RUN: IF, CR8, the APIC base, and whether it may
    KVM_INTERRUPT now (always with an in-kernel PIC, here: KVM_CREATE_IRQCHIP)."""
    run = vcpu.run
    hw = vcpu.hw
    run.cr8 = cr.kvm_get_cr8(vcpu)
    run.apic_base = vcpu.arch.apic_base
    if hw.uc is None:
        run.if_flag = run.ready_for_interrupt_injection = 0
        return
    run.if_flag = 1 if hw.reg("rflags") & EFLAGS_IF else 0
    run.ready_for_interrupt_injection = 1 if (vcpu.kvm.irqchip
                                              or kvm_vcpu_ready_for_interrupt_injection(vcpu)) else 0


def dm_request_for_irq_injection(vcpu: KvmVcpu) -> bool:
    """Userspace (its PIC) asks for KVM_EXIT_IRQ_WINDOW_OPEN; meaningless with an in-kernel PIC."""
    return bool(vcpu.run.request_interrupt_window) and not vcpu.kvm.irqchip


def kvm_cpu_accept_dm_intr(vcpu: KvmVcpu) -> bool:
    """There is room for a KVM_INTERRUPT: no ExtINT is pending already, and (with an in-kernel
    LAPIC) LINT0 would acknowledge one (kvm_apic_accept_pic_intr)."""
    if kvm_cpu_has_extint(vcpu):
        return False
    return vcpu.arch.apic is None or lapic.kvm_apic_accept_pic_intr(vcpu)


def kvm_event_needs_reinjection(vcpu: KvmVcpu) -> bool:
    arch = vcpu.arch
    return arch.exception.injected or arch.interrupt.injected or arch.nmi_injected


def kvm_vcpu_ready_for_interrupt_injection(vcpu: KvmVcpu) -> bool:
    """At an instruction boundary where the guest takes an interrupt, with nothing half-injected
    and no exception pending: userspace may KVM_INTERRUPT (or rewrite registers) now."""
    return (kvm_x86_ops.interrupt_allowed(vcpu) and kvm_cpu_accept_dm_intr(vcpu)
            and not kvm_event_needs_reinjection(vcpu) and not vcpu.arch.exception.pending)


@kfunc()
def vcpu_run(vcpu: KvmVcpu) -> int:
    """Enter the guest until a handler returns <= 0 or a signal is pending (reference §8.2)."""
    vcpu.run.exit_reason = _KVM_EXIT_UNKNOWN
    hw = vcpu.hw
    while True:
        if vcpu.arch.mp_state_halted:
            r = vcpu_block(vcpu)
        else:
            r = vcpu_enter_guest(vcpu)
        if r <= 0:
            return r
        if vcpu.arch.apic is not None and lapic.apic_has_pending_timer(vcpu):
            lapic.kvm_inject_apic_timer_irqs(vcpu)             # kvm_inject_pending_timer_irqs
        if dm_request_for_irq_injection(vcpu) and kvm_vcpu_ready_for_interrupt_injection(vcpu):
            vcpu.run.exit_reason = KvmExit.IRQ_WINDOW_OPEN
            vcpu.stat.request_irq_exits += 1
            return 0
        if vcpu.signal_pending or hw.kick_pending:
            vcpu.signal_pending = False
            vcpu.hw.kick_pending = False
            vcpu.run.exit_reason = KvmExit.INTR
            vcpu.stat.signal_exits += 1
            return -EINTR


@kfunc()
def vcpu_enter_guest(vcpu: KvmVcpu) -> int:
    """Service requests, inject events, run the vendor vcpu_run, then handle_exit (reference §8.3)."""
    if vcpu.kvm.vpit is not None:
        i8254.kvm_pit_run_host(vcpu.kvm)        # the host's hrtimer and kvm-pit kthread caught up to now
    if vcpu.host_events and kvm_deliver_host_events(vcpu):
        return 1   # kvm_vcpu_exit_request: no entry, vcpu_run returns -EINTR (simplified: checked before injection)
    req_int_win = dm_request_for_irq_injection(vcpu) and kvm_cpu_accept_dm_intr(vcpu)
    if req_int_win:
        vcpu.requests.add("KVM_REQ_EVENT")      # kvm_check_and_inject_events runs for it too
    if vcpu.requests:                                           # kvm_request_pending
        reqs = vcpu.requests
        if "KVM_REQ_TRIPLE_FAULT" in reqs:
            reqs.discard("KVM_REQ_TRIPLE_FAULT")
            vcpu.run.exit_reason = KvmExit.SHUTDOWN
            vcpu.mmio_needed = False
            return 0
        if "KVM_REQ_NMI" in reqs:
            reqs.discard("KVM_REQ_NMI")
            process_nmi(vcpu)
        if "KVM_REQ_EVENT" in reqs:
            reqs.discard("KVM_REQ_EVENT")
            vcpu.force_immediate_exit = kvm_check_and_inject_events(vcpu)
            if req_int_win:
                kvm_x86_ops.enable_irq_window(vcpu)            # userspace's window, whatever KVM holds
    if not vcpu.kvm.params.enable_ept:
        mmu_shadow.kvm_mmu_reload(vcpu)                        # kvm_mmu_reload: the root of CR3
    if vcpu.arch.switch_db_regs:                              # the guest's DR0-3/DR6 into the CPU
        vcpu.hw.load_debug_regs(vcpu.arch.db, vcpu.arch.dr6)
    vcpu.hw.host_timer_deadline = kvm_host_timer_deadline(vcpu) if vcpu.kvm.vpit is not None else None
    fastpath = kvm_x86_ops.vcpu_run(vcpu)
    if vcpu.arch.switch_db_regs & 2:                          # KVM_DEBUGREG_WONT_EXIT: read them back
        kvm_x86_ops.sync_dirty_debug_regs(vcpu)
    vcpu.stat.exits += 1
    return kvm_x86_ops.handle_exit(vcpu, fastpath)


# ---------------------------------------------------------------- events

def process_nmi(vcpu: KvmVcpu) -> None:
    """Move queued NMIs to pending; at most one pending while NMIs are masked, else two."""
    limit = 1 if (kvm_x86_ops.get_nmi_mask(vcpu) or vcpu.arch.nmi_injected) else 2
    vcpu.arch.nmi_pending = min(vcpu.arch.nmi_pending + vcpu.arch.nmi_queued, limit)
    vcpu.arch.nmi_queued = 0
    if vcpu.arch.nmi_pending:
        vcpu.requests.add("KVM_REQ_EVENT")


def kvm_inject_nmi(vcpu: KvmVcpu) -> None:
    """KVM_NMI → kvm_vcpu_ioctl_nmi → kvm_inject_nmi: queue, KVM_REQ_NMI."""
    vcpu.arch.nmi_queued += 1
    vcpu.requests.add("KVM_REQ_NMI")


def kvm_queue_interrupt(vcpu: KvmVcpu, vector: int, soft: bool) -> None:
    q = vcpu.arch.interrupt
    q.injected, q.soft, q.nr = True, soft, vector


def kvm_clear_interrupt_queue(vcpu: KvmVcpu) -> None:
    vcpu.arch.interrupt.injected = False


ENXIO = 6
KVM_NR_INTERRUPTS = 256


def kvm_vcpu_ioctl_interrupt(vcpu: KvmVcpu, irq: int) -> int:
    """KVM_INTERRUPT (userspace PIC): the vector counts as acknowledged and is injected at the next
    entry whatever RFLAGS.IF says (the VMM checks ready_for_interrupt_injection first); with an
    in-kernel PIC (KVM_CREATE_IRQCHIP) -ENXIO.  Simplified: the split-irqchip ExtINT path is absent."""
    if irq >= KVM_NR_INTERRUPTS:
        return -EINVAL
    if vcpu.kvm.irqchip:
        return -ENXIO
    kvm_queue_interrupt(vcpu, irq, False)
    vcpu.requests.add("KVM_REQ_EVENT")
    return 0


def kvm_deliver_host_events(vcpu: KvmVcpu) -> bool:
    """The uapi.HostEvents due at this VM-exit count, in the order queued (the ioctl another thread
    issued, the signal, the host NMI timer lands before this entry); True if a signal is now pending."""
    for ev in vcpu.host_events.pop(vcpu.stat.exits, ()):
        if ev.request == "KVM_NMI":
            kvm_inject_nmi(vcpu)
        elif ev.request == "KVM_INTERRUPT":
            kvm_vcpu_ioctl_interrupt(vcpu, ev.arg)      # its errno has no thread to go to
        elif ev.request == "SIGNAL":
            vcpu.signal_pending = True
        elif ev.request in ("HOST_NMI", "HOST_TICK"):
            vcpu.hw.host_nmi_every = ev.arg or None
            vcpu.hw.host_event_kind = "tick" if ev.request == "HOST_TICK" else "nmi"
    return vcpu.signal_pending


def kvm_host_timer_deadline(vcpu: KvmVcpu) -> int | None:
    """The retired-instruction count at which a host hrtimer of an in-kernel device (the PIT's)
    interrupts the guest, or None: the host timer interrupt is an EXTERNAL_INTERRUPT exit."""
    deadline = i8254.kvm_pit_host_deadline(vcpu.kvm)
    return None if deadline is None else deadline - lapic._not_retiring_ns(vcpu)


def kvm_cpu_has_extint(vcpu: KvmVcpu) -> bool:
    """An interrupt from outside the LAPIC: with a userspace PIC, the one KVM_INTERRUPT queued; with
    the in-kernel one, its INTR output, if the LAPIC lets it through (LVT0 ExtINT)."""
    if vcpu.arch.apic is None:
        return vcpu.arch.interrupt.injected
    if not lapic.kvm_apic_accept_pic_intr(vcpu):
        return False
    return vcpu.kvm.vpic is not None and bool(vcpu.kvm.vpic.output)


def kvm_cpu_has_injectable_intr(vcpu: KvmVcpu) -> bool:
    """The userspace-PIC vector of KVM_INTERRUPT, or the in-kernel LAPIC's highest deliverable vector."""
    if kvm_cpu_has_extint(vcpu):
        return True
    if vcpu.arch.apic is None:
        return False
    return lapic.kvm_apic_has_interrupt(vcpu) != -1


def kvm_cpu_get_interrupt(vcpu: KvmVcpu) -> int:
    """The vector to inject, acknowledged: the PIC's first (INTA, kvm_pic_read_irq), else the LAPIC's."""
    if vcpu.arch.apic is None:
        return vcpu.arch.interrupt.nr if vcpu.arch.interrupt.injected else -1
    if kvm_cpu_has_extint(vcpu):
        return i8259.kvm_pic_read_irq(vcpu.kvm)
    return lapic.kvm_get_apic_interrupt(vcpu)


def kvm_check_and_inject_events(vcpu: KvmVcpu) -> bool:
    """First re-inject what is already injected (an exception, NMI or interrupt not yet delivered,
    e.g. KVM_INTERRUPT's or KVM_SET_VCPU_EVENTS'), then new events by priority: pending exception,
    NMI, interrupt (reference §2.5 step 3); an interrupt that cannot be taken now (IF=0, STI/MOV-SS
    shadow) opens an interrupt window.  True (req_immediate_exit, the kernel's -EBUSY) when an NMI
    or interrupt waits behind a re-injected event: the entry must exit again at once to get here."""
    arch = vcpu.arch
    exc = arch.exception
    if exc.injected:
        kvm_x86_ops.inject_exception(vcpu)
    elif not exc.pending:
        if arch.nmi_injected:
            kvm_x86_ops.inject_nmi(vcpu)
        elif arch.interrupt.injected:
            kvm_x86_ops.inject_irq(vcpu, arch.interrupt.nr, reinjected=True)
    can_inject = not kvm_event_needs_reinjection(vcpu)
    if exc.pending:
        if not can_inject:
            return False     # simplified: a pending exception behind an injected one waits its turn
        # A fault pushes RF=1 (SDM 17.3.1.1) so that IRET retries the instruction without its
        # instruction breakpoint firing again; VM entry pushes RFLAGS as KVM left it.
        if exception_type(exc.vector) == EXCPT_FAULT:
            hw = vcpu.hw
            hw.set_reg("rflags", hw.reg("rflags") | EFLAGS_RF)
        if exc.vector == Vector.DB:
            kvm_deliver_exception_payload(vcpu)
            if vcpu.arch.dr7 & cr.DR7_GD:               # GD is cleared on the #DB it raises
                vcpu.arch.dr7 &= ~cr.DR7_GD
                cr.kvm_update_dr7(vcpu)
        exc.pending, exc.injected = False, True
        kvm_x86_ops.inject_exception(vcpu)
        return False
    if vcpu.guest_debug & KVM_GUESTDBG_BLOCKIRQ:     # the debugger asked for no new NMIs or interrupts
        return False
    if arch.nmi_pending:
        if not can_inject:
            return True
        if kvm_x86_ops.nmi_allowed(vcpu):
            arch.nmi_pending -= 1
            arch.nmi_injected = True
            kvm_x86_ops.inject_nmi(vcpu)
            if arch.nmi_pending:
                kvm_x86_ops.enable_nmi_window(vcpu)
            return False
        kvm_x86_ops.enable_nmi_window(vcpu)
    if kvm_cpu_has_injectable_intr(vcpu):
        if not can_inject:
            return True
        if vcpu.hw.uc is not None and kvm_x86_ops.interrupt_allowed(vcpu):
            irq = kvm_cpu_get_interrupt(vcpu)
            if irq != -1:
                kvm_queue_interrupt(vcpu, irq, False)
                kvm_x86_ops.inject_irq(vcpu, irq)
        if kvm_cpu_has_injectable_intr(vcpu) and not arch.interrupt.injected:
            kvm_x86_ops.enable_irq_window(vcpu)
    return False


def trace_kvm_inj_exception(vector: int, has_error: bool, error_code: int, reinjected: bool) -> None:
    tracepoint("kvm_inj_exception", exception=vector, has_error=has_error, error_code=error_code,
               reinjected=reinjected)


def exception_has_error_code(vector: int) -> bool:
    return vector in EXCEPTIONS_WITH_ERROR_CODE


# ---------------------------------------------------------------- HLT, shutdown

@kfunc()
def kvm_emulate_halt(vcpu: KvmVcpu) -> int:
    """Skip HLT, then halt: in the kernel with an in-kernel LAPIC, else KVM_EXIT_HLT."""
    return kvm_skip_emulated_instruction(vcpu) and __kvm_emulate_halt(vcpu)


def __kvm_emulate_halt(vcpu: KvmVcpu) -> int:
    vcpu.stat.halt_exits += 1
    if cr.lapic_in_kernel(vcpu):
        vcpu.arch.mp_state_halted = True       # KVM_MP_STATE_HALTED: vcpu_block until an event
        return 1
    vcpu.run.exit_reason = KvmExit.HLT
    return 0


def kvm_vcpu_has_events(vcpu: KvmVcpu) -> bool:
    """What wakes a halted vCPU: an exception KVM queued (the single-step #DB of the HLT itself), an
    NMI, a pending timer tick, or an interrupt it can take now."""
    if vcpu.arch.exception.pending:
        return True
    if vcpu.arch.nmi_pending or vcpu.arch.nmi_queued:
        return True
    if vcpu.arch.apic is not None and lapic.apic_has_pending_timer(vcpu):
        return True
    return bool(kvm_x86_ops.interrupt_allowed(vcpu) and kvm_cpu_has_injectable_intr(vcpu))


# Simplified: a halted vCPU that this many timer expiries did not wake sleeps for good (a timer tick
# that finds its interrupt masked or IF=0 leaves the same state for the next one).
HALT_TIMER_EXPIRIES = 64


def _next_timer_ns(vcpu: KvmVcpu) -> int | None:
    """The earliest armed deadline (virtual ns) of the LAPIC timer and the PIT's hrtimer."""
    deadlines = []
    apic = vcpu.arch.apic
    if apic is not None and apic.lapic_timer.target_expiration and lapic.apic_has_pending_timer(vcpu) == 0:
        deadlines.append(apic.lapic_timer.target_expiration)
    if vcpu.kvm.vpit is not None and (pit := i8254.kvm_pit_host_deadline(vcpu.kvm)) is not None:
        deadlines.append(pit)
    return min(deadlines) if deadlines else None


@kfunc()
def vcpu_block(vcpu: KvmVcpu) -> int:
    """kvm_vcpu_halt on virtual time: the vCPU sleeps until a timer (its LAPIC's, the PIT's) wakes it,
    the clock jumping to each deadline.  Simplified: with nothing that could ever wake it, the run ends
    as when its instruction budget is spent (KVM_RUN -EINTR, hw.insn_limit_hit), where KVM would sleep forever."""
    if not kvm_vcpu_has_events(vcpu):
        for _ in range(HALT_TIMER_EXPIRIES):
            deadline = _next_timer_ns(vcpu)
            if deadline is None:
                break
            vcpu.arch.slept_ns += max(deadline - lapic.kvm_virtual_ns(vcpu), 0)
            if vcpu.arch.apic is not None:
                lapic.kvm_lapic_expired_hv_timer(vcpu)
                if lapic.apic_has_pending_timer(vcpu):
                    lapic.kvm_inject_apic_timer_irqs(vcpu)
            if vcpu.kvm.vpit is not None:
                i8254.kvm_pit_run_host(vcpu.kvm)
            if kvm_vcpu_has_events(vcpu):
                break
        if not kvm_vcpu_has_events(vcpu):
            if vcpu.signal_pending or vcpu.hw.kick_pending:
                return 1                                      # vcpu_run's signal check returns -EINTR
            vcpu.hw.insn_limit_hit = True
            vcpu.hw.halted_forever = vcpu.hw.reg("rip")         # says why the budget "ran out" early
            vcpu.run.exit_reason = KvmExit.INTR
            return -EINTR
    vcpu.arch.mp_state_halted = False                         # KVM_MP_STATE_RUNNABLE
    vcpu.requests.add("KVM_REQ_EVENT")
    kvm_x86_ops.vcpu_load(vcpu)     # the vCPU thread slept (scheduled_out): kvm_arch_vcpu_load on wake-up
    return 1


def kvm_prepare_emulation_failure_exit(vcpu: KvmVcpu, data: list[int] | None = None,
                                       insn_bytes: bytes = b"") -> None:
    """prepare_emulation_failure_exit: suberror EMULATION, flags, optional bytes, 5 exit-info words."""
    run = vcpu.run
    run.exit_reason = KvmExit.INTERNAL_ERROR
    ef = run.emulation_failure
    ef.suberror = KvmInternalError.EMULATION
    ef.flags = 0
    info_start = 1
    if insn_bytes:
        ef.flags |= KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
        padded = (bytes(insn_bytes[:15]) + b"\x90" * 15)[:15]
        ef.insn_size = min(len(insn_bytes), 15)
        for i, b in enumerate(padded):
            ef.insn_bytes[i] = b
        info_start = 3
    words = list(kvm_x86_ops.get_exit_info(vcpu)) + list(data or [])[:4]
    for i, w in enumerate(words):
        run.internal.data[info_start + i] = w
    run.internal.ndata = info_start + len(words)


# ---------------------------------------------------------------- KVM_GET_SREGS / KVM_SET_SREGS

def kvm_arch_vcpu_ioctl_get_sregs(vcpu: KvmVcpu) -> KvmSregs:
    """__get_sregs: the CPU's state, with CR0/CR4 as the guest sees them and CR8 from KVM."""
    sregs = KvmSregs.from_buffer_copy(vcpu.hw.get_sregs())
    if vcpu.hw.uc is not None:
        sregs.cr0, sregs.cr4 = cr.kvm_read_cr0(vcpu), cr.kvm_read_cr4(vcpu)
    sregs.cr8 = cr.kvm_get_cr8(vcpu)
    sregs.apic_base = vcpu.arch.apic_base      # kvm_get_apic_base
    return sregs


def kvm_vcpu_is_legal_cr3(vcpu: KvmVcpu, cr3: int) -> bool:
    """No bit at or above the guest's MAXPHYADDR (simplified: no LAM control bits in CR3)."""
    return not cr3 >> cr.cpuid_maxphyaddr(vcpu)


def kvm_is_valid_sregs(vcpu: KvmVcpu, sregs: KvmSregs) -> bool:
    """What KVM_SET_SREGS refuses before touching anything: EFER.LME with CR0.PG is 64-bit
    paging (CR4.PAE, EFER.LMA and a legal CR3 required); otherwise EFER.LMA and CS.L must be
    clear; then the CR4 and CR0 validity checks of MOV to CR."""
    if sregs.efer & cr.EFER_LME and sregs.cr0 & cr.X86_CR0_PG:
        if not sregs.cr4 & cr.X86_CR4_PAE or not sregs.efer & cr.EFER_LMA:
            return False
        if not kvm_vcpu_is_legal_cr3(vcpu, sregs.cr3):
            return False
    elif sregs.efer & cr.EFER_LMA or sregs.cs.l:
        return False
    return cr.kvm_is_valid_cr4(vcpu, sregs.cr4) and cr.kvm_is_valid_cr0(vcpu, sregs.cr0)


# MSR_IA32_APICBASE writes are lapic.c's (mode transitions, reserved bits), with or without an irqchip.
kvm_apic_set_base = lapic.kvm_apic_set_base


def kvm_arch_vcpu_ioctl_set_sregs(vcpu: KvmVcpu, sregs: KvmSregs) -> int:
    """__set_sregs_common: -EINVAL for a state kvm_is_valid_sregs or kvm_apic_set_base refuses
    (nothing changed); else the CPU's state, then kvm_set_cr8 and the vendor set_cr0/set_cr4
    (read shadows, UMIP emulation).  Simplified: the EFER/CR writes of the kernel's order are
    one engine update (hw.set_sregs)."""
    if not kvm_is_valid_sregs(vcpu, sregs):
        return -EINVAL
    if kvm_apic_set_base(vcpu, sregs.apic_base, True):
        return -EINVAL
    vcpu.hw.set_sregs(sregs)
    cr.kvm_set_cr8(vcpu, sregs.cr8)
    kvm_x86_ops.set_cr0(vcpu, sregs.cr0)
    kvm_x86_ops.set_cr4(vcpu, sregs.cr4)
    return 0

