"""Model of vmx.c's guest-state checks for a CPU without unrestricted guest: vmx_guest_state_valid,
__vmx_guest_state_valid and its segment rules, vmx_emulation_required.

Without unrestricted guest, VMX runs real mode as virtual-8086 mode, whose segments must look like
real-mode ones (base = selector << 4, limit 0xffff, a read/write data type at DPL 3), and protected
mode only with segment caches VM entry accepts.  While the state KVM holds breaks these rules KVM
does not enter the guest: handle_invalid_guest_state emulates it (vmx.py).
"""

from __future__ import annotations

from kvmsim.hw import event
from kvmsim.hw.vmcs import (ENTRY_FAIL_DEFAULT, INTR_INFO_VALID_MASK, VMX_EXIT_REASONS_FAILED_VMENTRY, ExitReason,
                            IntrType, exit_reason_name)
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.vmx_controls import _unrestricted
from kvmsim.uapi import KvmSegment

X86_CR0_PE = 1 << 0
X86_EFLAGS_VM = 1 << 17
AR_TYPE_ACCESSES, AR_TYPE_WRITEABLE, AR_TYPE_CODE = 1, 4, 8
SEGMENT_TI_MASK, SEGMENT_RPL_MASK = 4, 3


def vmx_segment_access_rights(var: KvmSegment, dpl: int | None = None, type_: int | None = None) -> int:
    """The VMCS access-rights word of a kvm_segment (the rmode check overrides DPL and CS's type)."""
    return ((var.type if type_ is None else type_) & 15 | (var.s & 1) << 4
            | ((var.dpl if dpl is None else dpl) & 3) << 5 | (var.present & 1) << 7 | (var.avl & 1) << 12
            | (var.l & 1) << 13 | (var.db & 1) << 14 | (var.g & 1) << 15 | (var.unusable & 1) << 16)


def rmode_segment_valid(var: KvmSegment, is_cs: bool) -> bool:
    ar = vmx_segment_access_rights(var, dpl=3, type_=3 if is_cs else None)
    return var.base == var.selector << 4 and var.limit == 0xFFFF and ar == 0xF3


def code_segment_valid(cs: KvmSegment) -> bool:
    rpl = cs.selector & SEGMENT_RPL_MASK
    if cs.unusable or ~cs.type & (AR_TYPE_CODE | AR_TYPE_ACCESSES) or not cs.s:
        return False
    if cs.type & AR_TYPE_WRITEABLE:              # conforming code
        if cs.dpl > rpl:
            return False
    elif cs.dpl != rpl:
        return False
    return bool(cs.present)


def stack_segment_valid(ss: KvmSegment) -> bool:
    if ss.unusable:
        return True
    return ss.type in (3, 7) and bool(ss.s) and ss.dpl == ss.selector & SEGMENT_RPL_MASK and bool(ss.present)


def data_segment_valid(var: KvmSegment) -> bool:
    if var.unusable:
        return True
    if not var.s or not var.present or ~var.type & AR_TYPE_ACCESSES:
        return False
    return bool(var.type & AR_TYPE_CODE) or var.dpl >= var.selector & SEGMENT_RPL_MASK


def tr_valid(tr: KvmSegment) -> bool:
    return not tr.unusable and not tr.selector & SEGMENT_TI_MASK and tr.type in (3, 11) and bool(tr.present)


def ldtr_valid(ldtr: KvmSegment) -> bool:
    if ldtr.unusable:
        return True
    return not ldtr.selector & SEGMENT_TI_MASK and ldtr.type == 2 and bool(ldtr.present)


def invalid_guest_state_reason(vcpu: KvmVcpu) -> str:
    """'' when VM entry would accept the state without unrestricted guest, else the rule it breaks.
    As the kernel's __vmx_guest_state_valid: segments only (RIP and RFLAGS are not checked)."""
    hw = vcpu.hw
    s = hw.get_sregs()
    if not s.cr0 & X86_CR0_PE or hw.reg("rflags") & X86_EFLAGS_VM:
        for name in ("cs", "ss", "ds", "es", "fs", "gs"):
            if not rmode_segment_valid(getattr(s, name), name == "cs"):
                return f"real mode: {name.upper()} is not a vm86 segment"
        return ""
    if s.cs.selector & SEGMENT_RPL_MASK != s.ss.selector & SEGMENT_RPL_MASK:
        return "CS.RPL != SS.RPL"
    if not code_segment_valid(s.cs):
        return "CS"
    if not stack_segment_valid(s.ss):
        return "SS"
    for name in ("ds", "es", "fs", "gs"):
        if not data_segment_valid(getattr(s, name)):
            return name.upper()
    if not tr_valid(s.tr):
        return "TR"
    if not ldtr_valid(s.ldt):
        return "LDTR"
    return ""


def __vmx_guest_state_valid(vcpu: KvmVcpu) -> bool:
    return not invalid_guest_state_reason(vcpu)


def vmx_guest_state_valid(vcpu: KvmVcpu) -> bool:
    return _unrestricted(vcpu) or __vmx_guest_state_valid(vcpu)


def vmx_emulation_required(vcpu: KvmVcpu) -> bool:
    return vcpu.kvm.params.emulate_invalid_guest_state and not vmx_guest_state_valid(vcpu)


def vmx_update_emulation_required(vcpu: KvmVcpu) -> None:
    """vmx->emulation_required = vmx_emulation_required(vcpu).  Simplified: recomputed at each VM
    entry and after each emulated instruction, where the kernel recomputes it in vmx_set_cr0,
    vmx_set_segment and vmx_set_rflags (the only writers of the state it depends on)."""
    vcpu.arch.emulation_required = vmx_emulation_required(vcpu)


def _failed_entry(vcpu: KvmVcpu) -> None:
    v = vcpu.hw.vmcs
    v.clear_exit_info()
    v.vm_exit_reason = int(ExitReason.INVALID_STATE) | VMX_EXIT_REASONS_FAILED_VMENTRY
    v.exit_qualification = ENTRY_FAIL_DEFAULT


def vmx_no_entry_for_invalid_state(vcpu: KvmVcpu) -> bool:
    """vmx_vcpu_run without unrestricted guest: while emulation is required KVM does not enter the
    guest and makes up a failed entry (INVALID_STATE, no kvm_exit trace); with
    emulate_invalid_guest_state=0 it enters, and the CPU's VM-entry checks refuse invalid
    protected-mode state (a real exit, traced).  Simplified: real mode then runs as it is (KVM would
    force vm86 segments on it, fix_rmode_seg).  True when the guest did not run."""
    vmx_update_emulation_required(vcpu)
    if vcpu.arch.emulation_required:
        if vcpu.hw.vmcs.vm_entry_intr_info_field & INTR_INFO_VALID_MASK and not vcpu.hw.cr(0) & X86_CR0_PE:
            kvm_inject_realmode_interrupt(vcpu)
        _failed_entry(vcpu)
        return True
    if vcpu.kvm.params.emulate_invalid_guest_state or not vcpu.hw.cr(0) & X86_CR0_PE:
        return False
    if __vmx_guest_state_valid(vcpu):
        return False
    _failed_entry(vcpu)
    vcpu.stat.exits_by_reason[exit_reason_name(vcpu.hw.vmcs.vm_exit_reason)] += 1
    return True


def kvm_inject_realmode_interrupt(vcpu: KvmVcpu) -> None:
    """An event KVM injects in real mode without unrestricted guest is delivered by KVM itself
    (x86.c's kvm_inject_realmode_interrupt: the emulator's emulate_int_real, through the IVT), not
    at VM entry.  Simplified: only while emulation is required; otherwise the silicon delivers it at
    entry, which the guest cannot tell apart.  A fault while delivering is KVM_REQ_TRIPLE_FAULT."""
    v = vcpu.hw.vmcs
    info, v.vm_entry_intr_info_field = v.vm_entry_intr_info_field, 0
    itype = IntrType(info & 0x700)
    soft = itype in (IntrType.SOFT_INTR, IntrType.SOFT_EXCEPTION, IntrType.PRIV_SW_EXCEPTION)
    next_rip = vcpu.hw.reg("rip") + v.vm_entry_instruction_len if soft else None
    try:
        event.deliver(vcpu.hw, info & 0xFF, itype, None, next_rip=next_rip)
    except (event.TripleFault, event.DeliveryFault, event.TaskGate):
        vcpu.requests.add("KVM_REQ_TRIPLE_FAULT")
