"""Model of arch/x86/kvm/irq_comm.c (and kvm_vm_ioctl_irq_line): GSIs and their routes.

kvm_set_irq raises or lowers a GSI on every irqchip its routing entries name.  The routing is
KVM's default table for KVM_CREATE_IRQCHIP: GSI 0-15 to the PIC line of the same number (and to
the IO-APIC pin, absent here), so an ISA line from userspace (KVM_IRQ_LINE) or the in-kernel PIT
reaches i8259.py.  The irq-ack and mask notifiers are irqchip.py's.
Simplified: no in-kernel IO-APIC and no KVM_SET_GSI_ROUTING; a GSI >= 16 reaches nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvmsim.kvm import i8259
# The notifiers (virt/kvm/irqchip.c, eventfd.c) live one module down: the PIC calls them too.
from kvmsim.kvm.irqchip import (kvm_fire_mask_notifiers, kvm_irq_map_chip_pin, kvm_notify_acked_irq,  # noqa: F401
                                kvm_register_irq_ack_notifier, kvm_register_irq_mask_notifier,
                                kvm_unregister_irq_ack_notifier, kvm_unregister_irq_mask_notifier)

if TYPE_CHECKING:
    from kvmsim.kvm.vcpu import Kvm

ENXIO = 6
EINVAL = 22
KVM_USERSPACE_IRQ_SOURCE_ID = 0
KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID = 1
BITS_PER_LONG = 64
NR_ISA_GSIS = i8259.PIC_NUM_PINS


def kvm_request_irq_source_id(kvm: "Kvm") -> int:
    """The lowest free source id (bits 0 and 1 are userspace's and irqfd resampling's)."""
    bitmap = kvm.irq_sources_bitmap | (1 << KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID)
    for i in range(BITS_PER_LONG):
        if not bitmap >> i & 1:
            kvm.irq_sources_bitmap |= 1 << i
            return i
    return -EINVAL


def kvm_set_pic_irq(kvm: "Kvm", pin: int, irq_source_id: int, level: int) -> int:
    if kvm.vpic is None:
        return -1
    return i8259.kvm_pic_set_irq(kvm.vpic, pin, irq_source_id, level)


def kvm_set_irq(kvm: "Kvm", irq_source_id: int, irq: int, level: int, line_status: bool = False) -> int:
    """Every route of the GSI: < 0 if none took it, else how many were newly raised (0: coalesced)."""
    ret = -1
    routes = (kvm_set_pic_irq,) if 0 <= irq < NR_ISA_GSIS else ()   # the default table's irqchip entries
    for route in routes:
        r = route(kvm, irq, irq_source_id, level)
        if r < 0:
            continue
        ret = r + (0 if ret < 0 else ret)
    return ret


def kvm_vm_ioctl_irq_line(kvm: "Kvm", irq: int, level: int) -> tuple[int, int]:
    """KVM_IRQ_LINE: (0, kvm_set_irq's status) or (-ENXIO, 0) without an in-kernel irqchip."""
    if not kvm.irqchip:
        return -ENXIO, 0
    return 0, kvm_set_irq(kvm, KVM_USERSPACE_IRQ_SOURCE_ID, irq, level)
