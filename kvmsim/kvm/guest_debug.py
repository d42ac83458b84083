"""Model of KVM_SET_GUEST_DEBUG (x86.c kvm_arch_vcpu_ioctl_set_guest_debug) and the RFLAGS.TF
that KVM_GUESTDBG_SINGLESTEP sets behind the guest's back.

A debugger in userspace (gdb through QEMU's gdbstub) asks KVM to stop the guest after every
instruction (SINGLESTEP: KVM sets RFLAGS.TF and intercepts #DB), at INT3s it planted
(USE_SW_BP: #BP intercepted) or at hardware breakpoints in DR0-3/DR7 of its own (USE_HW_BP);
each stop is KVM_EXIT_DEBUG with run->debug.arch (vmx.py handle_exception_nmi).
"""

from __future__ import annotations

from kvmsim.hw.vmcs import Vector
from kvmsim.kvm import cr
from kvmsim.kvm.kvm_cache_regs import kvm_get_linear_rip
from kvmsim.kvm.kvm_x86_ops import kvm_x86_ops
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_exception import kvm_queue_exception
from kvmsim.uapi import (KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_BP, KVM_GUESTDBG_INJECT_DB,
                         KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP, KvmGuestDebug)

EINVAL, EBUSY = 22, 16
X86_EFLAGS_TF = 1 << 8
KVM_GUESTDBG_VALID_MASK = (KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_HW_BP
                           | KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_INJECT_BP | KVM_GUESTDBG_INJECT_DB
                           | KVM_GUESTDBG_BLOCKIRQ)


def kvm_get_rflags(vcpu: KvmVcpu) -> int:
    """RFLAGS as userspace sees it: without the TF that single-stepping set."""
    rflags = vcpu.hw.reg("rflags")
    if vcpu.guest_debug & KVM_GUESTDBG_SINGLESTEP:
        rflags &= ~X86_EFLAGS_TF
    return rflags


def __kvm_set_rflags(vcpu: KvmVcpu, rflags: int) -> None:
    """TF goes back on while the vCPU is still where single-stepping began."""
    if vcpu.guest_debug & KVM_GUESTDBG_SINGLESTEP and kvm_get_linear_rip(vcpu) == vcpu.arch.singlestep_rip:
        rflags |= X86_EFLAGS_TF
    vcpu.hw.set_reg("rflags", rflags)


def kvm_set_rflags(vcpu: KvmVcpu, rflags: int) -> None:
    __kvm_set_rflags(vcpu, rflags)
    vcpu.requests.add("KVM_REQ_EVENT")


def kvm_effective_dr7(vcpu: KvmVcpu) -> int:
    """GUEST_DR7 as kvm_update_dr7 loads it: the debugger's while it uses hardware breakpoints,
    else the guest's.  (Simplified: read when needed rather than written to a VMCS field.)"""
    return vcpu.arch.guest_debug_dr7 if vcpu.guest_debug & KVM_GUESTDBG_USE_HW_BP else vcpu.arch.dr7


def kvm_arch_vcpu_ioctl_set_guest_debug(vcpu: KvmVcpu, dbg: KvmGuestDebug) -> int:
    """0, -EINVAL for an unknown control bit, -EBUSY to inject #DB/#BP over a pending exception.
    USE_HW_BP arms the debugger's instruction breakpoints (DR0-3, DR7) in the CPU."""
    control = dbg.control
    if control & ~KVM_GUESTDBG_VALID_MASK:
        return -EINVAL
    if control & (KVM_GUESTDBG_INJECT_DB | KVM_GUESTDBG_INJECT_BP):
        if vcpu.arch.exception.pending or vcpu.arch.exception.injected:
            return -EBUSY
        kvm_queue_exception(vcpu, Vector.DB if control & KVM_GUESTDBG_INJECT_DB else Vector.BP)
    rflags = kvm_get_rflags(vcpu)
    vcpu.guest_debug = control if control & KVM_GUESTDBG_ENABLE else 0
    arch = vcpu.arch
    if vcpu.guest_debug & KVM_GUESTDBG_USE_HW_BP:
        arch.eff_db = [dbg.arch.debugreg[i] for i in range(4)]
        arch.guest_debug_dr7 = dbg.arch.debugreg[7]
    else:
        arch.eff_db = list(arch.db)
    # kvm_update_dr7 / switch_db_regs: the debugger's breakpoints reach the CPU (simplified: now, not at entry)
    cr.kvm_update_dr7(vcpu)
    if vcpu.guest_debug & KVM_GUESTDBG_SINGLESTEP:
        arch.singlestep_rip = kvm_get_linear_rip(vcpu)
    kvm_set_rflags(vcpu, rflags)
    kvm_x86_ops.update_exception_bitmap(vcpu)
    return 0


__all__ = ["kvm_arch_vcpu_ioctl_set_guest_debug", "kvm_effective_dr7", "kvm_get_rflags", "kvm_set_rflags"]
