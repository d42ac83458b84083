"""Model of x86.c's KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS: the vCPU's pending and injected
events as struct kvm_vcpu_events, so that a VMM can save them and put them back (migration,
snapshots) with nothing lost or delivered twice.

Per-VM capabilities this model does not offer are off, as on a VM that never enabled them:
KVM_CAP_EXCEPTION_PAYLOAD (pending and injected exceptions are reported together, a payload is
delivered before it is reported) and KVM_CAP_X86_TRIPLE_FAULT_EVENT.
"""

from __future__ import annotations

from kvmsim.hw.vmcs import Vector
from kvmsim.kvm import x86
from kvmsim.kvm.kvm_x86_ops import kvm_x86_ops
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.uapi import (KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_PAYLOAD, KVM_VCPUEVENT_VALID_SHADOW,
                         KVM_VCPUEVENT_VALID_SIPI_VECTOR, KVM_VCPUEVENT_VALID_SMM,
                         KVM_VCPUEVENT_VALID_TRIPLE_FAULT, KvmVcpuEvents)

EINVAL = 22
_VALID_FLAGS = (KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW
                | KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT)


def _exception_is_soft(vector: int) -> bool:
    return vector in (Vector.BP, Vector.OF)


def kvm_deliver_exception_payload(vcpu: KvmVcpu) -> None:
    """A pending exception's payload goes where the CPU would put it (#PF: CR2).
    Simplified: a #DB payload (DR6 bits) is not merged into DR6 here."""
    ex = vcpu.arch.exception
    if ex.has_payload and ex.vector == Vector.PF:
        vcpu.hw.set_cr2(ex.payload)
    ex.has_payload, ex.payload = False, 0


def kvm_vcpu_ioctl_x86_get_vcpu_events(vcpu: KvmVcpu) -> KvmVcpuEvents:
    """Queued NMIs become pending first; a soft exception (#BP, #OF) is not reported as injected or
    pending (no instruction length in the ABI: it recurs when the guest re-runs the instruction)."""
    arch = vcpu.arch
    x86.process_nmi(vcpu)
    ex = arch.exception
    if ex.pending and ex.has_payload:
        kvm_deliver_exception_payload(vcpu)
    ev = KvmVcpuEvents()
    if not _exception_is_soft(ex.vector):
        ev.exception.injected = int(ex.injected or ex.pending)   # conflated without EXCEPTION_PAYLOAD
        ev.exception.pending = int(ex.pending)
    ev.exception.nr = ex.vector
    ev.exception.has_error_code = int(ex.has_error_code)
    ev.exception.error_code = ex.error_code & 0xFFFF_FFFF
    ev.exception_has_payload = int(ex.has_payload)
    ev.exception_payload = ex.payload
    ev.interrupt.injected = int(arch.interrupt.injected and not arch.interrupt.soft)
    ev.interrupt.nr = arch.interrupt.nr
    ev.interrupt.shadow = kvm_x86_ops.get_interrupt_shadow(vcpu)
    ev.nmi.injected = int(arch.nmi_injected)
    ev.nmi.pending = arch.nmi_pending + arch.nmi_queued
    ev.nmi.masked = int(kvm_x86_ops.get_nmi_mask(vcpu))
    ev.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM
    return ev


def kvm_vcpu_ioctl_x86_set_vcpu_events(vcpu: KvmVcpu, events: KvmVcpuEvents) -> int:
    """0, or -EINVAL (nothing changed) for an unknown flag, a capability the VM lacks, an exception
    vector above 31 or NMI's.  Simplified: SMM is not modelled, so entering it (smi.smm or
    smi.pending with KVM_VCPUEVENT_VALID_SMM) is refused; the SIPI vector is ignored."""
    ev = KvmVcpuEvents.from_buffer_copy(events)
    flags = ev.flags
    if flags & ~_VALID_FLAGS:
        return -EINVAL
    if flags & KVM_VCPUEVENT_VALID_PAYLOAD:
        return -EINVAL                      # KVM_CAP_EXCEPTION_PAYLOAD not enabled
    ev.exception.pending = 0
    ev.exception_has_payload = 0
    if ev.exception.injected and (ev.exception.nr > 31 or ev.exception.nr == Vector.NMI):
        return -EINVAL
    if flags & KVM_VCPUEVENT_VALID_SMM and (ev.smi.smm or ev.smi.pending):
        return -EINVAL
    if flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT:
        return -EINVAL                      # KVM_CAP_X86_TRIPLE_FAULT_EVENT not enabled
    arch = vcpu.arch
    x86.process_nmi(vcpu)
    ex = arch.exception
    ex.injected, ex.pending = bool(ev.exception.injected), False
    ex.vector = ev.exception.nr
    ex.has_error_code = bool(ev.exception.has_error_code)
    ex.error_code = ev.exception.error_code
    ex.has_payload, ex.payload = False, ev.exception_payload
    arch.interrupt.injected = bool(ev.interrupt.injected)
    arch.interrupt.nr = ev.interrupt.nr
    arch.interrupt.soft = bool(ev.interrupt.soft)
    if flags & KVM_VCPUEVENT_VALID_SHADOW:
        kvm_x86_ops.set_interrupt_shadow(vcpu, ev.interrupt.shadow)
    arch.nmi_injected = bool(ev.nmi.injected)
    if flags & KVM_VCPUEVENT_VALID_NMI_PENDING:
        arch.nmi_pending = 0
        arch.nmi_queued = ev.nmi.pending
        if ev.nmi.pending:
            vcpu.requests.add("KVM_REQ_NMI")
    kvm_x86_ops.set_nmi_mask(vcpu, bool(ev.nmi.masked))
    vcpu.requests.add("KVM_REQ_EVENT")
    return 0
