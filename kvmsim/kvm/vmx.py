"""Model of arch/x86/kvm/vmx/vmx.c: vmx_vcpu_run, vmx_handle_exit, kvm_vmx_exit_handlers, the handlers, vmx_x86_ops."""

from __future__ import annotations

from typing import Callable

from kvmsim.hw.vmcs import (CPU_BASED_MOV_DR_EXITING, INTR_INFO_UNBLOCK_NMI, SECONDARY_EXEC_ENABLE_PML,
                            VMX_EXIT_REASONS_BUS_LOCK_DETECTED, APIC_ACCESS_OFFSET, APIC_ACCESS_TYPE, CPU_BASED_INTR_WINDOW_EXITING,
                            CPU_BASED_NMI_WINDOW_EXITING, GPR_ORDER, TYPE_LINEAR_APIC_INST_WRITE,
                            GUEST_INTR_STATE_MOV_SS, GUEST_INTR_STATE_NMI,
                            GUEST_INTR_STATE_STI, INTR_INFO_DELIVER_CODE_MASK, INTR_INFO_INTR_TYPE_MASK,
                            INTR_INFO_VALID_MASK, INTR_INFO_VECTOR_MASK, IO_QUAL_IN, IO_QUAL_PORT_SHIFT,
                            IO_QUAL_SIZE_MASK, IO_QUAL_STRING, VMX_EXIT_REASONS_FAILED_VMENTRY, CrAccessType,
                            CrExitQual, DrExitQual, ExitReason, IntrType, Vector, exit_reason_name, intr_info)
from kvmsim.kvm import cpuid, cr, dirty_log, guest_debug, hypercall, lapic, mmu, mmu_shadow, msr, pio, vmx_controls, x86
from kvmsim.kvm.kvm_cache_regs import kvm_get_linear_rip, kvm_register_read, kvm_register_write, kvm_rip_write
from kvmsim.kvm.kvm_x86_ops import KvmX86Ops
from kvmsim.kvm.trace import KVM_ISA_VMX
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_emulate import EMULTYPE_SKIP, EMULTYPE_VMWARE_GP, handle_ud, kvm_emulate_instruction
from kvmsim.hw.paging import PageFault
from kvmsim.kvm.x86_exception import (kvm_complete_insn_gp, kvm_deliver_exception_payload, kvm_inject_gp,
                                      kvm_inject_page_fault, kvm_queue_exception,
                                      kvm_queue_exception_e, kvm_queue_exception_p, kvm_skip_emulated_instruction)
from kvmsim.probe import PROBES, kfunc, tracepoint
from kvmsim.kvm import vmx_guest_state                            # invalid guest state
from kvmsim.kvm.x86_emulate import kvm_task_switch                # handle_task_switch
from kvmsim.uapi import (KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
                         KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI, KvmExit, KvmInternalError, KvmRunFlags)

ExitHandler = Callable[[KvmVcpu], int]
EXIT_FASTPATH_NONE = 0
EXIT_FASTPATH_EXIT_HANDLED = 2
EIO = 5
KVM_DEBUGREG_BP_ENABLED, KVM_DEBUGREG_WONT_EXIT, KVM_DEBUGREG_RELOAD = 1, 2, 4
X86_EFLAGS_TF = 1 << 8
_EPT_MISCONFIG = int(ExitReason.EPT_MISCONFIG)
_REASON_NAMES: dict[int, str] = {}   # exit_reason_name memo (vcpu.stat.exits_by_reason keys)


def _reason_name(full: int) -> str:
    name = _REASON_NAMES[full] = exit_reason_name(full)
    return name


# ---------------------------------------------------------------- VMCS accessors

def vmx_get_exit_qual(vcpu: KvmVcpu) -> int:
    return vcpu.hw.vmcs.exit_qualification


def vmx_get_intr_info(vcpu: KvmVcpu) -> int:
    return vcpu.hw.vmcs.vm_exit_intr_info


def vmx_get_exit_info(vcpu: KvmVcpu) -> tuple[int, int, int, int, int]:
    """get_exit_info: reason, qualification, IDT-vectoring info, intr info, intr error code."""
    v = vcpu.hw.vmcs
    if v.vm_exit_reason & VMX_EXIT_REASONS_FAILED_VMENTRY:
        return v.vm_exit_reason, v.exit_qualification, 0, 0, 0
    return (v.vm_exit_reason, v.exit_qualification, v.idt_vectoring_info_field, v.vm_exit_intr_info,
            v.vm_exit_intr_error_code)


# ---------------------------------------------------------------- entry / exit

@kfunc()
def vmx_vcpu_run(vcpu: KvmVcpu) -> int:
    """VM entry and exit (reference §1.3): trace kvm_entry, run, host NMI, trace kvm_exit."""
    hw = vcpu.hw
    if not vmx_controls._unrestricted(vcpu) and vmx_guest_state.vmx_no_entry_for_invalid_state(vcpu):
        return EXIT_FASTPATH_NONE
    if PROBES.enabled:
        rip = hw.reg("rip")   # one register, not two full KVM_GET_REGS snapshots per entry
        tracepoint("kvm_entry", vcpu_id=vcpu.vcpu_id, rip=rip, immediate_exit=False,
                   intr_info=hw.vmcs.vm_entry_intr_info_field, error_code=hw.vmcs.vm_entry_exception_error_code)
    # vmx_update_hv_timer: the LAPIC timer's deadline arms the VMX-preemption timer for this entry.
    hw.vmcs.vmx_preemption_timer_deadline = lapic.kvm_lapic_hv_deadline(vcpu) if vcpu.arch.apic is not None else None
    force = vcpu.force_immediate_exit
    if force:          # vmx_update_hv_timer(force_immediate_exit): a timer of 0 exits right after injection
        vcpu.force_immediate_exit = False
        hw.vmcs.vmx_preemption_timer_deadline = hw.guest_insns
    hw.vmcs.tsc_offset = lapic.kvm_tsc_offset(vcpu)     # vmx_write_tsc_offset (simplified: at every entry)
    if vcpu.arch.ple_window_dirty:                      # vmx_vcpu_run: the grown/shrunk window
        vcpu.arch.ple_window_dirty = False
        hw.vmcs.ple_window = vcpu.arch.ple_window
    hw.enter_guest()
    v = hw.vmcs
    # A host NMI (intr info 0x80000202) is handled by the host's NMI handler right here;
    # handle_exception_nmi then just returns 1, so nothing is guest- or userspace-visible.
    reason = v.vm_exit_reason
    vcpu.stat.exits_by_reason[_REASON_NAMES.get(reason) or _reason_name(reason)] += 1
    if PROBES.enabled:
        info = vmx_get_exit_info(vcpu)
        tracepoint("kvm_exit", exit_reason=v.vm_exit_reason, guest_rip=hw.reg("rip"), isa=KVM_ISA_VMX,
                   info1=info[1], info2=info[2], intr_info=info[3], error_code=info[4], vcpu_id=vcpu.vcpu_id,
                   requests=frozenset(vcpu.requests))
    vmx_complete_interrupts(vcpu)
    if force and reason == ExitReason.PREEMPTION_TIMER:   # handle_fastpath_preemption_timer: mission accomplished
        hw.vmcs.vmx_preemption_timer_deadline = None
        return EXIT_FASTPATH_EXIT_HANDLED
    return EXIT_FASTPATH_NONE


def _is_nmi(info: int) -> bool:
    return (info & (INTR_INFO_INTR_TYPE_MASK | INTR_INFO_VALID_MASK)) == (IntrType.NMI_INTR | INTR_INFO_VALID_MASK)


def vmx_complete_interrupts(vcpu: KvmVcpu) -> None:
    """Events injected at this entry were delivered by the CPU (no IDT-vectoring info): clear them."""
    vcpu.arch.exception.injected = False
    vcpu.arch.nmi_injected = False
    vcpu.arch.interrupt.injected = False          # kvm_clear_interrupt_queue


def vmx_exception_bitmap(params) -> frozenset[int]:
    """update_exception_bitmap: #DB, #UD, #MC, #AC always (#DB so that a guest cannot loop the CPU
    in #DB delivery, CVE-2015-8104); #GP for the VMware backdoor; #PF without EPT
    (vmx_need_pf_intercept: the shadow MMU sees every guest page fault)."""
    bitmap = {Vector.DB, Vector.UD, Vector.MC, Vector.AC}
    if params.enable_vmware_backdoor:
        bitmap.add(Vector.GP)
    if not params.enable_ept:
        bitmap.add(Vector.PF)
    return frozenset(bitmap)


def vmx_update_exception_bitmap(vcpu: KvmVcpu) -> None:
    """KVM_SET_GUEST_DEBUG's part: #BP intercepted while the debugger plants INT3s, #DB while it
    single-steps or uses DR7 (already in vmx_exception_bitmap: #DB is intercepted always, and
    handle_exception_nmi re-queues the guest's own)."""
    bitmap = set(vmx_exception_bitmap(vcpu.kvm.params))
    dbg = vcpu.guest_debug
    if dbg & (KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP) == KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP:
        bitmap.add(Vector.BP)
    if dbg & (KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_HW_BP):
        bitmap.add(Vector.DB)
    vcpu.hw.exception_bitmap = frozenset(bitmap)


def vmx_get_interrupt_shadow(vcpu: KvmVcpu) -> int:
    info = vcpu.hw.vmcs.guest_interruptibility_info
    return ((KVM_X86_SHADOW_INT_STI if info & GUEST_INTR_STATE_STI else 0)
            | (KVM_X86_SHADOW_INT_MOV_SS if info & GUEST_INTR_STATE_MOV_SS else 0))


def vmx_set_interrupt_shadow(vcpu: KvmVcpu, mask: int) -> None:
    v = vcpu.hw.vmcs
    v.guest_interruptibility_info &= ~(GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS)
    if mask & KVM_X86_SHADOW_INT_MOV_SS:
        v.guest_interruptibility_info |= GUEST_INTR_STATE_MOV_SS
    elif mask & KVM_X86_SHADOW_INT_STI:
        v.guest_interruptibility_info |= GUEST_INTR_STATE_STI


def vmx_vcpu_create(vcpu: KvmVcpu) -> None:
    """The MSR bitmap (pass-through MSRs), the exception bitmap, then init_vmcs."""
    vcpu.hw.msr_passthrough = set(msr.VMX_PASSTHROUGH_MSRS)
    vcpu.hw.exception_bitmap = vmx_exception_bitmap(vcpu.kvm.params)
    vmx_controls.init_vmcs(vcpu)


def vmx_get_nmi_mask(vcpu: KvmVcpu) -> bool:
    """Virtual NMIs: the CPU tracks blocking in the guest interruptibility state."""
    return bool(vcpu.hw.vmcs.guest_interruptibility_info & GUEST_INTR_STATE_NMI)


def vmx_set_nmi_mask(vcpu: KvmVcpu, masked: bool) -> None:
    if masked:
        vcpu.hw.vmcs.guest_interruptibility_info |= GUEST_INTR_STATE_NMI
    else:
        vcpu.hw.vmcs.guest_interruptibility_info &= ~GUEST_INTR_STATE_NMI


def vmx_nmi_allowed(vcpu: KvmVcpu) -> bool:
    """Blocked by NMI blocking or an STI/MOV-SS shadow (reference §2.5 step 4)."""
    return not vcpu.hw.vmcs.guest_interruptibility_info & (GUEST_INTR_STATE_NMI | GUEST_INTR_STATE_STI
                                                             | GUEST_INTR_STATE_MOV_SS)


def vmx_enable_nmi_window(vcpu: KvmVcpu) -> None:
    vcpu.hw.vmcs.cpu_based_vm_exec_control |= CPU_BASED_NMI_WINDOW_EXITING


def vmx_interrupt_allowed(vcpu: KvmVcpu) -> bool:
    """!__vmx_interrupt_blocked: RFLAGS.IF set and no STI/MOV-SS shadow."""
    return bool(vcpu.hw.reg("rflags") & x86.EFLAGS_IF) and not (
        vcpu.hw.vmcs.guest_interruptibility_info & (GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS))


def vmx_enable_irq_window(vcpu: KvmVcpu) -> None:
    vcpu.hw.vmcs.cpu_based_vm_exec_control |= CPU_BASED_INTR_WINDOW_EXITING


@kfunc()
def vmx_handle_exit(vcpu: KvmVcpu, exit_fastpath: int) -> int:
    """__vmx_handle_exit, then a bus lock the CPU reported (on this exit or as BUS_LOCK) goes to
    userspace as KVM_EXIT_X86_BUS_LOCK, with KVM_RUN_X86_BUS_LOCK in kvm_run.flags."""
    ret = __vmx_handle_exit(vcpu, exit_fastpath)
    if vcpu.hw.vmcs.vm_exit_reason & VMX_EXIT_REASONS_BUS_LOCK_DETECTED:
        if ret > 0:
            vcpu.run.exit_reason = KvmExit.X86_BUS_LOCK
        vcpu.run.flags |= KvmRunFlags.KVM_RUN_X86_BUS_LOCK
        return 0
    return ret


def __vmx_handle_exit(vcpu: KvmVcpu, exit_fastpath: int) -> int:
    """Ordered checks of reference §1.4 (steps that need nested/PML/vNMI-less setups are not modelled)."""
    full = vcpu.hw.vmcs.vm_exit_reason
    run = vcpu.run
    if vcpu.arch.emulation_required:                                         # guest state is invalid
        return handle_invalid_guest_state(vcpu)
    if full & VMX_EXIT_REASONS_FAILED_VMENTRY:                               # 5
        run.exit_reason = KvmExit.FAIL_ENTRY
        run.fail_entry.hardware_entry_failure_reason = full
        run.fail_entry.cpu = vcpu.arch.last_vmentry_cpu
        return 0
    if vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_ENABLE_PML:     # 1: flush the PML buffer
        vmx_flush_pml_buffer(vcpu)
    if exit_fastpath != EXIT_FASTPATH_NONE:                                  # 9
        return 1
    basic = full & 0xFFFF
    handler = KVM_VMX_EXIT_HANDLERS.get(basic) if basic < kvm_vmx_max_exit_handlers else None  # 10, 12
    if handler is None:
        return unexpected_vmexit(vcpu)
    return handler(vcpu)


@kfunc()
def unexpected_vmexit(vcpu: KvmVcpu) -> int:
    """Unknown reason → KVM_EXIT_INTERNAL_ERROR / UNEXPECTED_EXIT_REASON, data [reason, cpu]."""
    run = vcpu.run
    run.exit_reason = KvmExit.INTERNAL_ERROR
    run.internal.suberror = KvmInternalError.UNEXPECTED_EXIT_REASON
    run.internal.ndata = 2
    run.internal.data[0] = vcpu.hw.vmcs.vm_exit_reason
    run.internal.data[1] = vcpu.arch.last_vmentry_cpu
    return 0


# Handlers in the kernel's table whose behaviour this model has not built yet: the kernel's own
# answer for an exit it cannot handle (never a Python error).
handle_not_modelled = unexpected_vmexit


# ---------------------------------------------------------------- skipping

@kfunc()
def vmx_skip_emulated_instruction(vcpu: KvmVcpu) -> int:
    return skip_emulated_instruction(vcpu)


def skip_emulated_instruction(vcpu: KvmVcpu) -> int:
    """VM_EXIT_INSTRUCTION_LEN, except EPT misconfig under a hypervisor: decode with EMULTYPE_SKIP."""
    hw = vcpu.hw
    basic = hw.vmcs.vm_exit_reason & 0xFFFF
    if basic != _EPT_MISCONFIG or not vcpu.kvm.params.host_is_hypervisor:
        length = hw.vmcs.vm_exit_instruction_len
        if length:
            old = hw.reg("rip")
            rip = old + length
            if ((rip ^ old) >> 31) == 3 and hw.mode() != "long64":
                rip &= 0xFFFF_FFFF
            kvm_rip_write(vcpu, rip & ((1 << 64) - 1))
    else:
        if not kvm_emulate_instruction(vcpu, EMULTYPE_SKIP):
            return 0
    hw.vmcs.guest_interruptibility_info &= ~3  # vmx_set_interrupt_shadow(vcpu, 0)
    return 1


# ---------------------------------------------------------------- injection (VM-entry fields)

def vmx_inject_exception(vcpu: KvmVcpu) -> None:
    exc = vcpu.arch.exception
    v = vcpu.hw.vmcs
    has_error = exc.has_error_code and vcpu.hw.mode() != "real"
    soft = exc.vector in (Vector.BP, Vector.OF)
    info = intr_info(exc.vector, IntrType.SOFT_EXCEPTION if soft else IntrType.HARD_EXCEPTION, has_error)
    if has_error:
        v.vm_entry_exception_error_code = exc.error_code & 0xFFFF
    if soft:
        v.vm_entry_instruction_len = vcpu.arch.event_exit_inst_len
    kvm_deliver_exception_payload(vcpu)
    v.vm_entry_intr_info_field = info
    vcpu.stat.injected_exceptions.append({"vector": exc.vector, "error_code": exc.error_code if has_error else None})
    if PROBES.enabled:
        x86.trace_kvm_inj_exception(exc.vector, has_error, exc.error_code, False)


def vmx_inject_nmi(vcpu: KvmVcpu) -> None:
    vcpu.stat.nmi_injections += 1
    vcpu.hw.vmcs.vm_entry_intr_info_field = intr_info(Vector.NMI, IntrType.NMI_INTR)


def vmx_inject_irq(vcpu: KvmVcpu, irq: int, reinjected: bool = False) -> None:
    if not reinjected:
        vcpu.stat.irq_injections += 1
    if PROBES.enabled:
        tracepoint("kvm_inj_virq", vector=irq, soft=False, reinjected=reinjected)
    vcpu.hw.vmcs.vm_entry_intr_info_field = intr_info(irq, IntrType.EXT_INTR)


# ---------------------------------------------------------------- handlers

@kfunc()
def handle_exception_nmi(vcpu: KvmVcpu) -> int:
    """Reference §2.2 in order."""
    info = vmx_get_intr_info(vcpu)
    vector = info & INTR_INFO_VECTOR_MASK
    itype = info & INTR_INFO_INTR_TYPE_MASK
    if _is_nmi(info) or (itype == IntrType.HARD_EXCEPTION and vector == Vector.MC):   # 2
        return 1
    if vector == Vector.NM and itype == IntrType.HARD_EXCEPTION:                      # 3
        kvm_queue_exception(vcpu, Vector.NM)
        return 1
    if vector == Vector.UD and itype == IntrType.HARD_EXCEPTION:                      # 4
        return handle_ud(vcpu)
    error_code = vcpu.hw.vmcs.vm_exit_intr_error_code if info & INTR_INFO_DELIVER_CODE_MASK else 0
    if vector == Vector.GP and vcpu.kvm.params.enable_vmware_backdoor:               # 6
        if error_code:
            kvm_queue_exception_e(vcpu, Vector.GP, error_code)
            return 1
        return kvm_emulate_instruction(vcpu, EMULTYPE_VMWARE_GP)
    if vector == Vector.PF and itype == IntrType.HARD_EXCEPTION:                      # 8: is_page_fault
        cr2 = vmx_get_exit_qual(vcpu)    # the CPU left CR2 alone: the address is the qualification
        # (With EPT #PF is intercepted only for allow_smaller_maxphyaddr, not modelled.)
        return mmu.kvm_handle_page_fault(vcpu, error_code, cr2)
    if vector == Vector.DB:                                                            # 10: #DB
        dr6 = vmx_get_exit_qual(vcpu)
        if not vcpu.guest_debug & (KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_HW_BP):
            if itype == IntrType.PRIV_SW_EXCEPTION:       # ICEBP exits on itself: skip it, then #DB
                skip_emulated_instruction(vcpu)
            elif (vcpu.hw.reg("rflags") & X86_EFLAGS_TF and vcpu.hw.vmcs.guest_interruptibility_info
                  & (GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS)):
                vcpu.hw.vmcs.guest_pending_dbg_exceptions |= cr.DR6_BS
            kvm_queue_exception_p(vcpu, Vector.DB, dr6)
            return 1
        vcpu.run.debug.arch.dr6 = dr6 | cr.DR6_ACTIVE_LOW
        vcpu.run.debug.arch.dr7 = guest_debug.kvm_effective_dr7(vcpu)
    if vector in (Vector.DB, Vector.BP):                                               # 10: #BP (and #DB)
        vcpu.arch.event_exit_inst_len = vcpu.hw.vmcs.vm_exit_instruction_len
        run = vcpu.run
        run.exit_reason = KvmExit.DEBUG
        run.debug.arch.pc = kvm_get_linear_rip(vcpu)
        run.debug.arch.exception = vector
        return 0
    if vector == Vector.AC:                                                            # 10: #AC
        kvm_queue_exception_e(vcpu, Vector.AC, error_code)
        return 1
    run = vcpu.run                                                                     # 10: default
    run.exit_reason = KvmExit.EXCEPTION
    run.ex.exception, run.ex.error_code = vector, error_code
    return 0


@kfunc()
def handle_external_interrupt(vcpu: KvmVcpu) -> int:
    vcpu.stat.irq_exits += 1
    return 1


@kfunc()
def handle_triple_fault(vcpu: KvmVcpu) -> int:
    vcpu.run.exit_reason = KvmExit.SHUTDOWN
    vcpu.mmio_needed = False
    return 0


@kfunc()
def handle_io(vcpu: KvmVcpu) -> int:
    qual = vmx_get_exit_qual(vcpu)
    vcpu.stat.io_exits += 1
    if qual & IO_QUAL_STRING:
        return kvm_emulate_instruction(vcpu, 0)
    return pio.kvm_fast_pio(vcpu, (qual & IO_QUAL_SIZE_MASK) + 1, qual >> IO_QUAL_PORT_SHIFT,
                            bool(qual & IO_QUAL_IN))


@kfunc()
def kvm_emulate_as_nop(vcpu: KvmVcpu) -> int:
    return kvm_skip_emulated_instruction(vcpu)


@kfunc()
def kvm_emulate_invd(vcpu: KvmVcpu) -> int:
    return kvm_emulate_as_nop(vcpu)


@kfunc()
def kvm_emulate_wbinvd(vcpu: KvmVcpu) -> int:
    """No assigned device with non-coherent DMA: nothing to flush (kvm_emulate_wbinvd_noskip), skip."""
    return kvm_skip_emulated_instruction(vcpu)


@kfunc()
def handle_vmx_instruction(vcpu: KvmVcpu) -> int:
    """VMX instructions with nested=0: #UD."""
    kvm_queue_exception(vcpu, Vector.UD)
    return 1


@kfunc()
def kvm_handle_invalid_op(vcpu: KvmVcpu) -> int:
    kvm_queue_exception(vcpu, Vector.UD)
    return 1


@kfunc()
def kvm_emulate_xsetbv(vcpu: KvmVcpu) -> int:
    """XCR0 must keep x87, may add SSE/AVX (if SSE); anything else or CPL>0 is #GP(0)."""
    hw = vcpu.hw
    index = hw.reg("rcx") & 0xFFFF_FFFF
    xcr = (hw.reg("rdx") & 0xFFFF_FFFF) << 32 | (hw.reg("rax") & 0xFFFF_FFFF)
    bad = hw.cpl() != 0 or index != 0 or not xcr & 1 or xcr & ~0x7 or (xcr & 4 and not xcr & 2)
    if not bad:
        vcpu.arch.msrs["xcr0"] = xcr  # type: ignore[index]
        hw.set_xcr0(xcr)
    return kvm_complete_insn_gp(vcpu, int(bool(bad)))


def _trace_cr(write: bool, cr_num: int, val: int) -> None:
    if PROBES.enabled:
        tracepoint("kvm_cr", rw=int(write), cr=cr_num, val=val)


@kfunc()
def handle_cr(vcpu: KvmVcpu) -> int:
    """MOV to CR0/3/4/8, MOV from CR3/8, CLTS, LMSW (SDM table 28-3 qualification)."""
    q = CrExitQual.decode(vmx_get_exit_qual(vcpu))
    reg = GPR_ORDER[q.gpr]
    if q.access == CrAccessType.MOV_TO_CR:
        val = kvm_register_read(vcpu, reg)
        _trace_cr(True, q.cr, val)
        if q.cr == 0:
            return kvm_complete_insn_gp(vcpu, cr.kvm_set_cr0(vcpu, val))        # handle_set_cr0
        if q.cr == 3:
            return kvm_complete_insn_gp(vcpu, cr.kvm_set_cr3(vcpu, val))
        if q.cr == 4:
            return kvm_complete_insn_gp(vcpu, cr.kvm_set_cr4(vcpu, val))        # handle_set_cr4
        if q.cr == 8:
            cr8_prev = cr.kvm_get_cr8(vcpu)
            cr8 = val & 0xFF               # handle_cr passes the value as a u8
            ret = kvm_complete_insn_gp(vcpu, cr.kvm_set_cr8(vcpu, cr8))
            if cr.lapic_in_kernel(vcpu) or cr8_prev <= cr8:
                return ret
            vcpu.run.exit_reason = KvmExit.SET_TPR   # the userspace LAPIC may now deliver an interrupt
            return 0
    elif q.access == CrAccessType.CLTS:
        # The guest owns CR0.TS (KVM_POSSIBLE_CR0_GUEST_BITS): this exit is a KVM bug (KVM_BUG).
        return -EIO
    elif q.access == CrAccessType.MOV_FROM_CR:
        if q.cr in (3, 8):
            val = cr.kvm_read_cr3(vcpu) if q.cr == 3 else cr.kvm_get_cr8(vcpu)
            kvm_register_write(vcpu, reg, val)
            _trace_cr(False, q.cr, val)
            return kvm_skip_emulated_instruction(vcpu)
    else:                                                   # LMSW
        val = q.lmsw_source & 0x0F
        _trace_cr(True, 0, (cr.kvm_read_cr0(vcpu) & ~0xF) | val)
        cr.kvm_lmsw(vcpu, val)
        return kvm_skip_emulated_instruction(vcpu)
    vcpu.run.exit_reason = 0                                # vcpu_unimpl: "unhandled control register"
    return 0


@kfunc()
def handle_dr(vcpu: KvmVcpu) -> int:
    """MOV to/from DR0-7.  The exit comes before the CPL and CR4.DE checks, so KVM makes them.
    DR7.GD: the exit beats the CPU's #DB, so KVM raises it.  Otherwise, when userspace is not
    debugging the guest, KVM stops intercepting MOV DR (KVM_DEBUGREG_WONT_EXIT) and re-enters on the
    same instruction: the guest's DR accesses run natively until the next VM exit, when
    vmx_sync_dirty_debug_regs reads the registers back and sets MOV-DR exiting again."""
    q = DrExitQual.decode(vmx_get_exit_qual(vcpu))
    if not cr.kvm_require_dr(vcpu, q.dr):
        return 1
    err = 1
    if vcpu.hw.cpl() == 0:
        dr7 = vcpu.hw.vmcs.guest_dr7                             # GUEST_DR7: the CPU clears GD on a #DB
        if dr7 & cr.DR7_GD:
            if vcpu.guest_debug & KVM_GUESTDBG_USE_HW_BP:
                run = vcpu.run
                run.exit_reason = KvmExit.DEBUG
                run.debug.arch.dr6 = cr.DR6_BD | cr.DR6_ACTIVE_LOW
                run.debug.arch.dr7 = dr7
                run.debug.arch.pc = kvm_get_linear_rip(vcpu)
                run.debug.arch.exception = Vector.DB
                return 0
            kvm_queue_exception_p(vcpu, Vector.DB, cr.DR6_BD)
            return 1
        if vcpu.guest_debug == 0:
            vcpu.hw.vmcs.cpu_based_vm_exec_control &= ~CPU_BASED_MOV_DR_EXITING
            vcpu.arch.switch_db_regs |= KVM_DEBUGREG_WONT_EXIT   # reload DR0-3/DR6 before entry
            return 1                                             # and run the MOV DR again, natively
        reg = GPR_ORDER[q.gpr]
        if q.from_dr:
            kvm_register_write(vcpu, reg, cr.kvm_get_dr(vcpu, q.dr))
            err = 0
        else:
            err = cr.kvm_set_dr(vcpu, q.dr, kvm_register_read(vcpu, reg))
    return kvm_complete_insn_gp(vcpu, err)


@kfunc()
def handle_invlpg(vcpu: KvmVcpu) -> int:
    """INVLPG exits only without EPT: drop the shadow entries of the address, then skip."""
    mmu_shadow.kvm_mmu_invlpg(vcpu, vmx_get_exit_qual(vcpu))
    return kvm_skip_emulated_instruction(vcpu)


def vmx_sync_dirty_debug_regs(vcpu: KvmVcpu) -> None:
    """After an exit with KVM_DEBUGREG_WONT_EXIT: read back what the guest wrote natively, and
    intercept MOV DR again (the next access exits, and is let through again the same way)."""
    arch = vcpu.arch
    db, dr6, dr7 = vcpu.hw.read_debug_regs()
    arch.db, arch.dr6, arch.dr7 = list(db), dr6, dr7
    arch.switch_db_regs &= ~KVM_DEBUGREG_WONT_EXIT
    vcpu.hw.vmcs.cpu_based_vm_exec_control |= CPU_BASED_MOV_DR_EXITING


@kfunc()
def handle_desc(vcpu: KvmVcpu) -> int:
    """LGDT/LIDT/LLDT/LTR/SGDT/SIDT/SLDT/STR exit only while KVM emulates CR4.UMIP: emulate them."""
    return kvm_emulate_instruction(vcpu, 0)


def kvm_pause_in_guest(vcpu: KvmVcpu) -> bool:
    """KVM_CAP_X86_DISABLE_EXITS(PAUSE), or kvm_intel.ple_gap=0: PAUSE never exits."""
    p = vcpu.kvm.params
    return bool(p.disable_exits & vmx_controls.KVM_X86_DISABLE_EXITS_PAUSE) or p.ple_gap == 0


def __grow_ple_window(val: int, base: int, modifier: int, maximum: int) -> int:
    if modifier < 1:
        return base
    val = val * modifier if modifier < base else val + modifier
    return min(val, maximum)


def __shrink_ple_window(val: int, base: int, modifier: int, minimum: int) -> int:
    if modifier < 1:
        return base
    val = val // modifier if modifier < base else val - modifier
    return max(val, minimum)


def _set_ple_window(vcpu: KvmVcpu, new: int) -> None:
    """A changed window is written to the VMCS at the next entry, and traced."""
    arch = vcpu.arch
    old, arch.ple_window = arch.ple_window, new
    if new != old:
        arch.ple_window_dirty = True
        if PROBES.enabled:
            tracepoint("kvm_ple_window_update", vcpu_id=vcpu.vcpu_id, new=new, old=old)


def grow_ple_window(vcpu: KvmVcpu) -> None:
    """A PAUSE loop exited: let the next loop spin longer before it exits."""
    p = vcpu.kvm.params
    _set_ple_window(vcpu, __grow_ple_window(vcpu.arch.ple_window, p.ple_window, p.ple_window_grow, p.ple_window_max))


def shrink_ple_window(vcpu: KvmVcpu) -> None:
    """vmx_sched_in: the vCPU thread was scheduled in again (shrink 0: back to ple_window)."""
    p = vcpu.kvm.params
    _set_ple_window(vcpu, __shrink_ple_window(vcpu.arch.ple_window, p.ple_window, p.ple_window_shrink, p.ple_window))


def vmx_vcpu_load(vcpu: KvmVcpu) -> None:
    """The vCPU thread runs again after it was scheduled out (here: after a halt in the kernel)."""
    if not kvm_pause_in_guest(vcpu):
        shrink_ple_window(vcpu)


@kfunc()
def handle_pause(vcpu: KvmVcpu) -> int:
    """PAUSE-loop exit: grow_ple_window; kvm_vcpu_on_spin (a directed yield to another vCPU: none
    here, one vCPU); then skip the PAUSE as a NOP."""
    if not kvm_pause_in_guest(vcpu):
        grow_ple_window(vcpu)
    return kvm_skip_emulated_instruction(vcpu)


@kfunc()
def kvm_emulate_rdpmc(vcpu: KvmVcpu) -> int:
    """RDPMC at CPL0 (CR4.PCE/CPL faults come first in the CPU): kvm_pmu_rdpmc fails without a
    vPMU (pmu->version 0, no CPUID leaf 0xA) → #GP.  Simplified: no vPMU is modelled at all."""
    kvm_inject_gp(vcpu, 0)
    return 1


@kfunc()
def handle_monitor_trap(vcpu: KvmVcpu) -> int:
    return 1


@kfunc()
def handle_machine_check(vcpu: KvmVcpu) -> int:
    return 1


@kfunc()
def handle_interrupt_window(vcpu: KvmVcpu) -> int:
    """The guest can take an interrupt now: stop window exiting; KVM_REQ_EVENT injects what KVM
    holds.  Returning 1 lets vcpu_run see a userspace window request (dm_request_for_irq_injection)
    with kvm_vcpu_ready_for_interrupt_injection true: KVM_EXIT_IRQ_WINDOW_OPEN (x86.py)."""
    vcpu.hw.vmcs.cpu_based_vm_exec_control &= ~CPU_BASED_INTR_WINDOW_EXITING
    vcpu.requests.add("KVM_REQ_EVENT")
    vcpu.stat.irq_window_exits += 1
    return 1


@kfunc()
def handle_apic_access(vcpu: KvmVcpu) -> int:
    """A guest access to the APIC-access page: an EOI write is done without decoding (fasteoi);
    anything else is emulated, reaching apic_mmio_read/write through the MMIO bus."""
    qual = vmx_get_exit_qual(vcpu)
    if (qual & APIC_ACCESS_TYPE) == TYPE_LINEAR_APIC_INST_WRITE and (qual & APIC_ACCESS_OFFSET) == lapic.APIC_EOI:
        lapic.kvm_lapic_reg_write(vcpu, lapic.APIC_EOI, 0)        # kvm_lapic_set_eoi
        return kvm_skip_emulated_instruction(vcpu)
    return kvm_emulate_instruction(vcpu, 0)


@kfunc()
def handle_tpr_below_threshold(vcpu: KvmVcpu) -> int:
    """Never reached here: this model leaves the TPR shadow off (CR8 exits to kvm_set_cr8 instead)."""
    vcpu.requests.add("KVM_REQ_EVENT")
    return 1


@kfunc()
def handle_preemption_timer(vcpu: KvmVcpu) -> int:
    """The VMX-preemption timer KVM armed for the LAPIC timer (hv timer) fired."""
    vcpu.hw.vmcs.vmx_preemption_timer_deadline = None
    lapic.kvm_lapic_expired_hv_timer(vcpu)
    return 1


@kfunc()
def handle_nmi_window(vcpu: KvmVcpu) -> int:
    """NMIs are unblocked: stop NMI-window exiting; KVM_REQ_EVENT injects the pending NMI."""
    vcpu.hw.vmcs.cpu_based_vm_exec_control &= ~CPU_BASED_NMI_WINDOW_EXITING
    vcpu.stat.nmi_window_exits += 1
    vcpu.requests.add("KVM_REQ_EVENT")
    return 1


TASK_SWITCH_GATE = 3


@kfunc()
def handle_task_switch(vcpu: KvmVcpu) -> int:
    """CALL/JMP/IRET or an IDT task gate switched tasks: the qualification's bits 31:30 say which,
    its low 16 bits the new TSS.  An event that was being delivered through a gate (IDT-vectoring
    info) is not re-injected; a soft event or an instruction is skipped first, then kvm_task_switch."""
    idt_info = vcpu.hw.vmcs.idt_vectoring_info_field
    idt_v = idt_info & INTR_INFO_VALID_MASK
    idt_index = idt_info & INTR_INFO_VECTOR_MASK
    itype = idt_info & INTR_INFO_INTR_TYPE_MASK
    qual = vmx_get_exit_qual(vcpu)
    reason = (qual & 0xFFFF_FFFF) >> 30
    has_error_code, error_code = False, 0
    if reason == TASK_SWITCH_GATE and idt_v:
        if itype == IntrType.NMI_INTR:
            vcpu.arch.nmi_injected = False
            vmx_set_nmi_mask(vcpu, True)
        elif itype in (IntrType.EXT_INTR, IntrType.SOFT_INTR):
            pass          # kvm_clear_interrupt_queue: vmx_complete_interrupts re-queued nothing here
        elif itype in (IntrType.HARD_EXCEPTION, IntrType.SOFT_EXCEPTION):
            if itype == IntrType.HARD_EXCEPTION and idt_info & INTR_INFO_DELIVER_CODE_MASK:
                has_error_code, error_code = True, vcpu.hw.vmcs.idt_vectoring_error_code
            vcpu.arch.exception.pending = vcpu.arch.exception.injected = False   # kvm_clear_exception_queue
    tss_selector = qual & 0xFFFF
    if not idt_v or itype not in (IntrType.HARD_EXCEPTION, IntrType.EXT_INTR, IntrType.NMI_INTR):
        skip_emulated_instruction(vcpu)
    return kvm_task_switch(vcpu, tss_selector, idt_index if itype == IntrType.SOFT_INTR else -1, reason,
                           has_error_code, error_code)


# The kernel's budget of emulated instructions per handle_invalid_guest_state call.
INVALID_STATE_EMULATION_BUDGET = 130


def vmx_unhandleable_emulation_required(vcpu: KvmVcpu) -> bool:
    """Outside real mode (vm86) KVM cannot inject an exception while it must emulate."""
    if not vcpu.arch.emulation_required:
        return False
    vm86_active = not vcpu.hw.cr(0) & 1
    exc = vcpu.arch.exception
    return not vm86_active and (exc.pending or exc.injected)


@kfunc()
def handle_invalid_guest_state(vcpu: KvmVcpu) -> int:
    """Emulate one instruction at a time (EMULTYPE 0) while the state is invalid: at most the budget per
    call, and back to vcpu_run for an open interrupt window, a pending event, a signal or a halt."""
    intr_window_requested = vcpu.hw.vmcs.cpu_based_vm_exec_control & CPU_BASED_INTR_WINDOW_EXITING
    count = INVALID_STATE_EMULATION_BUDGET
    while vcpu.arch.emulation_required and count:
        count -= 1
        if intr_window_requested and vmx_interrupt_allowed(vcpu):
            return handle_interrupt_window(vcpu)
        if "KVM_REQ_EVENT" in vcpu.requests:
            return 1
        if not kvm_emulate_instruction(vcpu, 0):
            return 0
        vmx_guest_state.vmx_update_emulation_required(vcpu)
        if vmx_unhandleable_emulation_required(vcpu):
            x86.kvm_prepare_emulation_failure_exit(vcpu)
            return 0
        if vcpu.arch.halt_request:
            vcpu.arch.halt_request = False
            return x86.__kvm_emulate_halt(vcpu)                        # kvm_emulate_halt_noskip
        if vcpu.signal_pending or vcpu.hw.kick_pending:                # __xfer_to_guest_mode_work_pending
            return 1
    return 1


# ---------------------------------------------------------------- issue 14: the remaining handlers

INVPCID_TYPE_INDIV_ADDR, INVPCID_TYPE_SINGLE_CTXT, INVPCID_TYPE_ALL_INCL_GLOBAL, INVPCID_TYPE_ALL_NON_GLOBAL = 0, 1, 2, 3
_SREG_ORDER = ("es", "cs", "ss", "ds", "fs", "gs")      # VMX_INSTRUCTION_INFO segment numbers


def _sign_extend(v: int, bit: int) -> int:
    v &= (1 << (bit + 1)) - 1
    return v - (1 << (bit + 1)) if v >> bit else v


def get_vmx_mem_address(vcpu: KvmVcpu, qual: int, info: int) -> int | None:
    """The linear address of an instruction's memory operand from VMX_INSTRUCTION_INFO and the
    displacement in the qualification; None after queueing the fault.  Simplified: outside 64-bit
    mode the segment limit and type checks are not modelled."""
    if info & (1 << 10):                                   # a register operand: #UD
        kvm_queue_exception(vcpu, Vector.UD)
        return None
    scaling, addr_size, seg = info & 3, (info >> 7) & 7, _SREG_ORDER[(info >> 15) & 7]
    off = _sign_extend(qual, 31) if addr_size == 1 else _sign_extend(qual, 15) if addr_size == 0 else qual
    if not info & (1 << 27):
        off += kvm_register_read(vcpu, GPR_ORDER[(info >> 23) & 0xF])
    if not info & (1 << 22):
        off += kvm_register_read(vcpu, GPR_ORDER[(info >> 18) & 0xF]) << scaling
    if addr_size == 1:
        off &= 0xFFFF_FFFF
    elif addr_size == 0:
        off &= 0xFFFF
    hw = vcpu.hw
    if cr.is_long_mode(vcpu):
        gva = (off + (hw.seg_base(seg) if seg in ("fs", "gs") else 0)) & ((1 << 64) - 1)
        if (gva >> 47) not in (0, (1 << 17) - 1):
            kvm_queue_exception_e(vcpu, Vector.SS if seg == "ss" else Vector.GP, 0)
            return None
        return gva
    return (hw.seg_base(seg) + off) & 0xFFFF_FFFF


@kfunc()
def handle_invpcid(vcpu: KvmVcpu) -> int:
    """INVPCID exits where INVLPG does (no EPT): #UD without CPUID.INVPCID, else kvm_handle_invpcid."""
    if not cr.guest_cpuid_has(vcpu, 7, 0, "ebx", 10):
        kvm_queue_exception(vcpu, Vector.UD)
        return 1
    info = vcpu.hw.vmcs.vmx_instruction_info
    kind = kvm_register_read(vcpu, GPR_ORDER[(info >> 28) & 0xF])
    gva = get_vmx_mem_address(vcpu, vmx_get_exit_qual(vcpu), info)   # read even for the "all" types
    if gva is None:
        return 1
    return kvm_handle_invpcid(vcpu, kind, gva)


def kvm_handle_invpcid(vcpu: KvmVcpu, kind: int, gva: int) -> int:
    """The 16-byte descriptor {PCID, linear address}: #GP(0) for PCID > 4095, a PCID without
    CR4.PCIDE, a non-canonical address (type 0) or a type above 3; else the TLB flush it asks."""
    hw = vcpu.hw
    try:
        raw = hw.read_linear_bytes(gva, 16)
    except PageFault as pf:                                # kvm_handle_memory_failure: the #PF
        kvm_inject_page_fault(vcpu, gva, pf.error_code)
        return 1
    pcid, gla = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
    if pcid >> 12:
        kvm_inject_gp(vcpu, 0)
        return 1
    pcid_enabled = bool(cr.kvm_read_cr4(vcpu) & cr.X86_CR4_PCIDE)
    if kind == INVPCID_TYPE_INDIV_ADDR:
        if (not pcid_enabled and pcid) or (gla >> 47) not in (0, (1 << 17) - 1):
            kvm_inject_gp(vcpu, 0)
            return 1
        mmu.kvm_mmu_invpcid_gva(vcpu, gla, pcid)
        return kvm_skip_emulated_instruction(vcpu)
    if kind == INVPCID_TYPE_SINGLE_CTXT:
        if not pcid_enabled and pcid:
            kvm_inject_gp(vcpu, 0)
            return 1
        hw.flush_tlb()                                     # kvm_invalidate_pcid
        return kvm_skip_emulated_instruction(vcpu)
    if kind in (INVPCID_TYPE_ALL_NON_GLOBAL, INVPCID_TYPE_ALL_INCL_GLOBAL):
        hw.flush_tlb()                                     # KVM_REQ_TLB_FLUSH_GUEST (globals too)
        return kvm_skip_emulated_instruction(vcpu)
    kvm_inject_gp(vcpu, 0)
    return 1


def kvm_emulate_monitor_mwait(vcpu: KvmVcpu, insn: str) -> int:
    """MONITOR/MWAIT are NOPs under KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS (default); without the
    quirk they are #UD unless the guest's CPUID has MONITOR (leaf 1 ECX bit 3)."""
    if not vcpu.kvm.params.quirk_mwait_never_ud_faults and not cr.guest_cpuid_has(vcpu, 1, 0, "ecx", 3):
        return kvm_handle_invalid_op(vcpu)
    return kvm_emulate_as_nop(vcpu)


@kfunc()
def kvm_emulate_mwait(vcpu: KvmVcpu) -> int:
    return kvm_emulate_monitor_mwait(vcpu, "MWAIT")


@kfunc()
def kvm_emulate_monitor(vcpu: KvmVcpu) -> int:
    return kvm_emulate_monitor_mwait(vcpu, "MONITOR")


@kfunc()
def handle_apic_write(vcpu: KvmVcpu) -> int:
    """APIC-register virtualization: the write already landed in the virtual-APIC page (trap-like);
    KVM applies its side effects (kvm_apic_write_nodecode).  Needs enable_apicv."""
    offset = vmx_get_exit_qual(vcpu) & 0xFF0
    apic = vcpu.arch.apic
    lapic.kvm_lapic_reg_write(vcpu, offset, lapic.kvm_lapic_get_reg(apic, offset))
    return 1


@kfunc()
def handle_apic_eoi_induced(vcpu: KvmVcpu) -> int:
    """Virtual-interrupt delivery: an EOI of a vector in the EOI-exit bitmap (kvm_apic_set_eoi_accelerated)."""
    vector = vmx_get_exit_qual(vcpu) & 0xFF
    if PROBES.enabled:
        tracepoint("kvm_eoi", apicid=vcpu.vcpu_id, vector=vector)
    # Simplified: the in-kernel IO-APIC's EOI (kvm_ioapic_send_eoi) is not modelled.
    vcpu.requests.add("KVM_REQ_EVENT")
    return 1


def vmx_update_cpu_dirty_logging(vcpu: KvmVcpu) -> None:
    """PML on while any memslot logs dirty pages (KVM makes the request of every vCPU; applied at
    once here, not before the next entry)."""
    v = vcpu.hw.vmcs
    if vmx_controls.vmx_secondary_exec_control(vcpu) & SECONDARY_EXEC_ENABLE_PML:
        v.secondary_vm_exec_control |= SECONDARY_EXEC_ENABLE_PML
    else:
        v.secondary_vm_exec_control &= ~SECONDARY_EXEC_ENABLE_PML


@kfunc()
def vmx_flush_pml_buffer(vcpu: KvmVcpu) -> None:
    """At every exit while PML is on: the GPAs the CPU logged (index+1..511) become dirty bits."""
    for gpa in vcpu.hw.pml_take():
        dirty_log.kvm_vcpu_mark_page_dirty(vcpu, gpa >> 12)


def _unblock_nmi(vcpu: KvmVcpu, qual: int) -> None:
    """The exit came while an IRET from an NMI handler ran: NMI blocking must be set again."""
    if not vcpu.hw.vmcs.idt_vectoring_info_field & INTR_INFO_VALID_MASK and qual & INTR_INFO_UNBLOCK_NMI:
        vcpu.hw.vmcs.guest_interruptibility_info |= GUEST_INTR_STATE_NMI


@kfunc()
def handle_pml_full(vcpu: KvmVcpu) -> int:
    """The 512-entry PML buffer was full: vmx_handle_exit has flushed it already; nothing else."""
    if PROBES.enabled:
        tracepoint("kvm_pml_full", vcpu_id=vcpu.vcpu_id)
    _unblock_nmi(vcpu, vmx_get_exit_qual(vcpu))
    return 1


@kfunc()
def handle_bus_lock_vmexit(vcpu: KvmVcpu) -> int:
    """A guest bus lock (split-lock): mark it; vmx_handle_exit turns it into KVM_EXIT_X86_BUS_LOCK."""
    vcpu.hw.vmcs.vm_exit_reason |= VMX_EXIT_REASONS_BUS_LOCK_DETECTED
    return 1


NOTIFY_VM_CONTEXT_INVALID = 1 << 0
KVM_X86_NOTIFY_VMEXIT_USER = 1 << 1
KVM_NOTIFY_CONTEXT_INVALID = 1 << 0


@kfunc()
def handle_notify(vcpu: KvmVcpu) -> int:
    """The CPU spent the notify window without reaching an instruction boundary: KVM_EXIT_NOTIFY
    when userspace asked (KVM_X86_NOTIFY_VMEXIT_USER) or the VM context is lost, else resume."""
    qual = vmx_get_exit_qual(vcpu)
    invalid = bool(qual & NOTIFY_VM_CONTEXT_INVALID)
    vcpu.stat.notify_window_exits += 1
    if qual & INTR_INFO_UNBLOCK_NMI:
        vcpu.hw.vmcs.guest_interruptibility_info |= GUEST_INTR_STATE_NMI
    if vcpu.kvm.params.notify_vmexit_flags & KVM_X86_NOTIFY_VMEXIT_USER or invalid:
        vcpu.run.exit_reason = KvmExit.NOTIFY
        vcpu.run.notify.flags = KVM_NOTIFY_CONTEXT_INVALID if invalid else 0
        return 0
    return 1


# 1: resume the guest; 0: kvm_run is filled in for userspace; <0: -errno from KVM_RUN.
KVM_VMX_EXIT_HANDLERS: dict[int, ExitHandler] = {
    ExitReason.EXCEPTION_NMI:         handle_exception_nmi,
    ExitReason.EXTERNAL_INTERRUPT:    handle_external_interrupt,
    ExitReason.TRIPLE_FAULT:          handle_triple_fault,
    ExitReason.NMI_WINDOW:            handle_nmi_window,
    ExitReason.IO_INSTRUCTION:        handle_io,
    ExitReason.CR_ACCESS:             handle_cr,
    ExitReason.DR_ACCESS:             handle_dr,
    ExitReason.CPUID:                 cpuid.kvm_emulate_cpuid,
    ExitReason.MSR_READ:              msr.kvm_emulate_rdmsr,
    ExitReason.MSR_WRITE:             msr.kvm_emulate_wrmsr,
    ExitReason.INTERRUPT_WINDOW:      handle_interrupt_window,
    ExitReason.HLT:                   x86.kvm_emulate_halt,
    ExitReason.INVD:                  kvm_emulate_invd,
    ExitReason.INVLPG:                handle_invlpg,
    ExitReason.RDPMC:                 kvm_emulate_rdpmc,
    ExitReason.VMCALL:                hypercall.kvm_emulate_hypercall,
    ExitReason.VMCLEAR:               handle_vmx_instruction,
    ExitReason.VMLAUNCH:              handle_vmx_instruction,
    ExitReason.VMPTRLD:               handle_vmx_instruction,
    ExitReason.VMPTRST:               handle_vmx_instruction,
    ExitReason.VMREAD:                handle_vmx_instruction,
    ExitReason.VMRESUME:              handle_vmx_instruction,
    ExitReason.VMWRITE:               handle_vmx_instruction,
    ExitReason.VMOFF:                 handle_vmx_instruction,
    ExitReason.VMON:                  handle_vmx_instruction,
    ExitReason.TPR_BELOW_THRESHOLD:   handle_tpr_below_threshold,
    ExitReason.APIC_ACCESS:           handle_apic_access,
    ExitReason.APIC_WRITE:            handle_apic_write,
    ExitReason.EOI_INDUCED:           handle_apic_eoi_induced,
    ExitReason.WBINVD:                kvm_emulate_wbinvd,
    ExitReason.XSETBV:                kvm_emulate_xsetbv,
    ExitReason.TASK_SWITCH:           handle_task_switch,
    ExitReason.MCE_DURING_VMENTRY:    handle_machine_check,
    ExitReason.GDTR_IDTR:             handle_desc,
    ExitReason.LDTR_TR:               handle_desc,
    ExitReason.EPT_VIOLATION:         mmu.handle_ept_violation,
    ExitReason.EPT_MISCONFIG:         mmu.handle_ept_misconfig,
    ExitReason.PAUSE_INSTRUCTION:     handle_pause,
    ExitReason.MWAIT_INSTRUCTION:     kvm_emulate_mwait,
    ExitReason.MONITOR_TRAP_FLAG:     handle_monitor_trap,
    ExitReason.MONITOR_INSTRUCTION:   kvm_emulate_monitor,
    ExitReason.INVEPT:                handle_vmx_instruction,
    ExitReason.INVVPID:               handle_vmx_instruction,
    ExitReason.RDRAND:                kvm_handle_invalid_op,
    ExitReason.RDSEED:                kvm_handle_invalid_op,
    ExitReason.PML_FULL:              handle_pml_full,
    ExitReason.INVPCID:               handle_invpcid,
    ExitReason.VMFUNC:                handle_vmx_instruction,
    ExitReason.PREEMPTION_TIMER:      handle_preemption_timer,
    ExitReason.ENCLS:                 kvm_handle_invalid_op,    # handle_encls without SGX
    ExitReason.BUS_LOCK:              handle_bus_lock_vmexit,
    ExitReason.NOTIFY:                handle_notify,
}

kvm_vmx_max_exit_handlers = max(KVM_VMX_EXIT_HANDLERS) + 1


# ---------------------------------------------------------------- the vendor module

# The hooks x86.c calls (kvm_x86_ops); vmx_x86_ops of vmx.c before the TDX split, vt_x86_ops of vmx/main.c since.
vmx_x86_ops = KvmX86Ops(
    name="kvm_intel",
    vcpu_after_set_cpuid=vmx_controls.vmx_vcpu_after_set_cpuid,
    vcpu_create=vmx_vcpu_create,
    set_cr0=vmx_controls.vmx_set_cr0,
    set_cr4=vmx_controls.vmx_set_cr4,
    set_efer=vmx_controls.vmx_set_efer,
    vcpu_run=vmx_vcpu_run,
    handle_exit=vmx_handle_exit,
    skip_emulated_instruction=vmx_skip_emulated_instruction,
    inject_irq=vmx_inject_irq,
    inject_nmi=vmx_inject_nmi,
    inject_exception=vmx_inject_exception,
    nmi_allowed=vmx_nmi_allowed,
    get_nmi_mask=vmx_get_nmi_mask,
    set_nmi_mask=vmx_set_nmi_mask,
    enable_nmi_window=vmx_enable_nmi_window,
    interrupt_allowed=vmx_interrupt_allowed,
    enable_irq_window=vmx_enable_irq_window,
    get_exit_info=vmx_get_exit_info,
    vcpu_load=vmx_vcpu_load,
    sync_dirty_debug_regs=vmx_sync_dirty_debug_regs,
    update_cpu_dirty_logging=vmx_update_cpu_dirty_logging,
    update_exception_bitmap=vmx_update_exception_bitmap,
    get_interrupt_shadow=vmx_get_interrupt_shadow,
    set_interrupt_shadow=vmx_set_interrupt_shadow,
)


def vmx_init() -> None:
    """module_init of kvm_intel: hand vmx_x86_ops to x86.c (kvm_x86_vendor_init)."""
    x86.kvm_x86_vendor_init(vmx_x86_ops)
