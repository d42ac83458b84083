"""Model of virt/kvm/irqchip.c and the notifier half of arch/x86/kvm/irq_comm.c: irq-ack notifiers
hear of an EOI'd line (the PIT's reinjection waits for it), mask notifiers of an IMR change (the
PIT forgets missed ticks when its line is unmasked).  Simplified: KVM's default routing, where a
PIC line's GSI is its number, and no KVM_SET_GSI_ROUTING.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from kvmsim.kvm.vcpu import Kvm


def kvm_irq_map_chip_pin(kvm: "Kvm", irqchip: int, pin: int) -> int:
    """The GSI routed to a PIC line: the default table's identity for ISA lines."""
    return pin


def kvm_register_irq_ack_notifier(kvm: "Kvm", gsi: int, irq_acked: Callable[[], None]) -> None:
    kvm.irq_ack_notifier_list.append((gsi, irq_acked))


def kvm_unregister_irq_ack_notifier(kvm: "Kvm", irq_acked: Callable[[], None]) -> None:
    kvm.irq_ack_notifier_list = [(g, f) for g, f in kvm.irq_ack_notifier_list if f != irq_acked]


def kvm_notify_acked_irq(kvm: "Kvm", irqchip: int, pin: int) -> None:
    gsi = kvm_irq_map_chip_pin(kvm, irqchip, pin)
    for g, irq_acked in list(kvm.irq_ack_notifier_list):
        if g == gsi:
            irq_acked()


def kvm_register_irq_mask_notifier(kvm: "Kvm", irq: int, func: Callable[[bool], None]) -> None:
    kvm.mask_notifier_list.append((irq, func))


def kvm_unregister_irq_mask_notifier(kvm: "Kvm", func: Callable[[bool], None]) -> None:
    kvm.mask_notifier_list = [(i, f) for i, f in kvm.mask_notifier_list if f != func]


def kvm_fire_mask_notifiers(kvm: "Kvm", irqchip: int, pin: int, mask: bool) -> None:
    gsi = kvm_irq_map_chip_pin(kvm, irqchip, pin)
    for irq, func in list(kvm.mask_notifier_list):
        if irq == gsi:
            func(mask)
