"""The in-kernel PIC pair (kvm/i8259.py) against the 8259A datasheet and KVM's i8259.c: the ICW
sequence, IRR/ISR/IMR and the OCW3 register select, non-specific and specific EOI, fixed and
rotating priority, the cascade through IRQ2, edge versus level lines by the ELCR, auto-EOI, poll,
and the wiring into the vCPU (ExtINT through LVT0, kvm_cpu_get_interrupt, KVM_IRQ_LINE).  The
guest's side is the port I/O bus KVM handles in the kernel (KVM_PIO_BUS), as an IN/OUT reaches it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvmsim.errors import BackendError
from kvmsim.kvm import i8259, lapic, x86
from kvmsim.kvm.kvm_main import SimKvm, SimVmFd
from kvmsim.uapi import KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE
from tests.simvm import inb, outb


@pytest.fixture
def vm() -> Iterator[SimVmFd]:
    vm = SimKvm().create_vm()
    vm.create_irqchip()
    vm.create_vcpu(0)
    yield vm
    vm.close()


def init(vm: SimVmFd, master: int = 0x08, slave: int = 0x70, icw4: int = 0x01) -> None:
    """The BIOS sequence: ICW1 (edge, cascade, ICW4 needed), ICW2 base, ICW3 wiring, ICW4, OCW1 all open."""
    for cmd, data, base, icw3 in ((0x20, 0x21, master, 0x04), (0xA0, 0xA1, slave, 0x02)):
        outb(vm, cmd, 0x11)
        outb(vm, data, base)
        outb(vm, data, icw3)
        outb(vm, data, icw4)
        outb(vm, data, 0x00)


def line(vm: SimVmFd, irq: int, level: int) -> int:
    return vm.irq_line(irq, level)


def pulse(vm: SimVmFd, irq: int) -> None:
    line(vm, irq, 1)
    line(vm, irq, 0)


def read_irr_isr(vm: SimVmFd, cmd: int) -> tuple[int, int]:
    outb(vm, cmd, 0x0A)                   # OCW3: read IRR
    irr = inb(vm, cmd)
    outb(vm, cmd, 0x0B)                   # OCW3: read ISR
    isr = inb(vm, cmd)
    return irr, isr


def ack(vm: SimVmFd) -> int:
    return i8259.kvm_pic_read_irq(vm.kvm)


# ---------------------------------------------------------------- creation, the ports

def test_create_irqchip_puts_the_pic_on_the_port_bus(vm: SimVmFd) -> None:
    assert vm.kvm.vpic is not None
    for port in (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1):
        assert i8259.picdev_in_range(port)
    assert vm.kvm.buses["KVM_PIO_BUS"].read(0x22, 1, bytearray(1)) < 0     # not the PIC's


def test_icw_sequence_sets_bases_and_opens_ocw1(vm: SimVmFd) -> None:
    init(vm, 0x20, 0x28)
    m, s = vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER), vm.get_irqchip(KVM_IRQCHIP_PIC_SLAVE)
    assert (m.irq_base, s.irq_base, m.init_state, s.init_state, m.init4) == (0x20, 0x28, 0, 0, 1)
    outb(vm, 0x21, 0xA5)                  # OCW1 after initialisation: the mask
    assert inb(vm, 0x21) == 0xA5
    outb(vm, 0x21, 0x13)                  # ICW2 ignores the low three bits
    outb(vm, 0x20, 0x11)
    outb(vm, 0x21, 0x13)
    assert vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER).irq_base == 0x10
    assert vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER).init_state == 2     # ICW3 and ICW4 still expected


def test_icw1_without_ic4_skips_icw4_and_clears_imr(vm: SimVmFd) -> None:
    init(vm)
    outb(vm, 0x21, 0xFF)
    outb(vm, 0x20, 0x10)                  # ICW1 without IC4
    assert inb(vm, 0x21) == 0x00          # IMR cleared by ICW1
    outb(vm, 0x21, 0x40)                  # ICW2
    outb(vm, 0x21, 0x04)                  # ICW3: done, no ICW4
    outb(vm, 0x21, 0xF0)                  # OCW1
    assert inb(vm, 0x21) == 0xF0 and vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER).irq_base == 0x40


def test_non_byte_access_is_dropped(vm: SimVmFd) -> None:
    init(vm)
    outb(vm, 0x21, 0x5A)
    bus = vm.kvm.buses["KVM_PIO_BUS"]
    assert bus.write(0x20, 2, b"\x11\x00") == 0       # taken by the PIC, which drops it (no ICW1)
    assert inb(vm, 0x21) == 0x5A and vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER).init_state == 0
    buf = bytearray(b"\x55\x55")
    assert bus.read(0x20, 2, buf) == 0 and buf == b"\x00\x00"
    assert bus.write(0x21, 2, b"\xff\xff") < 0         # past the master's two ports: not the PIC's (userspace)


# ---------------------------------------------------------------- IRR, ISR, IMR, EOI

def test_edge_request_goes_irr_then_isr_on_ack_until_eoi(vm: SimVmFd) -> None:
    init(vm)
    pulse(vm, 3)
    assert read_irr_isr(vm, 0x20) == (0x08, 0x00)
    assert vm.kvm.vpic.output == 1
    assert ack(vm) == 0x08 + 3
    assert read_irr_isr(vm, 0x20) == (0x00, 0x08)
    assert vm.kvm.vpic.output == 0
    pulse(vm, 3)                           # a second edge while in service: pending, not delivered
    assert read_irr_isr(vm, 0x20) == (0x08, 0x08) and vm.kvm.vpic.output == 0
    outb(vm, 0x20, 0x20)                   # non-specific EOI
    assert read_irr_isr(vm, 0x20) == (0x08, 0x00) and vm.kvm.vpic.output == 1


def test_masked_line_latches_but_does_not_interrupt(vm: SimVmFd) -> None:
    init(vm)
    outb(vm, 0x21, 0x10)
    assert line(vm, 4, 1) == -1            # kvm_set_irq: masked
    assert read_irr_isr(vm, 0x20)[0] == 0x10 and vm.kvm.vpic.output == 0
    outb(vm, 0x21, 0x00)                   # unmasking lets the latched edge through
    assert vm.kvm.vpic.output == 1 and ack(vm) == 0x0C


def test_edge_held_high_is_one_request_and_coalesces(vm: SimVmFd) -> None:
    init(vm)
    assert line(vm, 5, 1) == 1
    assert line(vm, 5, 1) == 1             # still high: no new edge, nothing newly raised either way
    assert ack(vm) == 0x0D
    assert vm.kvm.vpic.output == 0         # no edge since: no request
    line(vm, 5, 0)
    assert line(vm, 5, 1) == 1 and line(vm, 5, 0) >= 0 and vm.kvm.vpic.output == 0   # ISR still blocks it
    pulse(vm, 6)
    assert line(vm, 6, 1) == 0             # pending already: coalesced


def test_fixed_priority_and_non_specific_eoi_ends_the_highest(vm: SimVmFd) -> None:
    init(vm)
    pulse(vm, 5)
    pulse(vm, 1)
    assert ack(vm) == 0x09                 # IRQ1 before IRQ5
    pulse(vm, 0)
    assert ack(vm) == 0x08                 # IRQ0 pre-empts IRQ1 in service
    assert vm.kvm.vpic.output == 0         # IRQ5 waits below both
    outb(vm, 0x20, 0x20)                   # ends IRQ0 (the highest in service)
    assert read_irr_isr(vm, 0x20) == (0x20, 0x02)
    assert vm.kvm.vpic.output == 0
    outb(vm, 0x20, 0x20)
    assert ack(vm) == 0x0D


def test_specific_eoi_ends_the_named_line(vm: SimVmFd) -> None:
    init(vm)
    pulse(vm, 4)
    ack(vm)
    pulse(vm, 2 + 1)
    ack(vm)                                # ISR: 3 and 4
    outb(vm, 0x20, 0x60 | 4)               # specific EOI for IRQ4, not the highest (3)
    assert read_irr_isr(vm, 0x20) == (0x00, 0x08)


def test_rotate_on_eoi_makes_the_ended_line_lowest(vm: SimVmFd) -> None:
    init(vm)
    pulse(vm, 1)
    assert ack(vm) == 0x09
    outb(vm, 0x20, 0xA0)                   # rotate on non-specific EOI: IRQ1 now lowest, IRQ2 highest
    assert vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER).priority_add == 2
    pulse(vm, 1)
    pulse(vm, 7)
    assert ack(vm) == 0x0F                 # 7 outranks 1 after the rotation


def test_set_priority_command(vm: SimVmFd) -> None:
    init(vm)
    outb(vm, 0x20, 0xC0 | 4)               # OCW2 set priority: IRQ4 lowest, IRQ5 highest
    pulse(vm, 0)
    pulse(vm, 6)
    assert ack(vm) == 0x0E


def test_spurious_irq7_when_the_request_went_away(vm: SimVmFd) -> None:
    init(vm)
    outb(vm, 0x4D0, 0x08)                  # IRQ3 level-triggered
    line(vm, 3, 1)
    assert vm.kvm.vpic.output == 1
    line(vm, 3, 0)                         # drops before the INTA
    assert ack(vm) == 0x0F                 # spurious: vector of IRQ7, nothing in service
    assert read_irr_isr(vm, 0x20) == (0x00, 0x00)


# ---------------------------------------------------------------- cascade, ELCR, auto-EOI, poll

def test_slave_line_cascades_through_irq2(vm: SimVmFd) -> None:
    init(vm)
    pulse(vm, 11)
    assert read_irr_isr(vm, 0xA0) == (0x08, 0x00)
    assert read_irr_isr(vm, 0x20)[0] == 0x04 and vm.kvm.vpic.output == 1
    assert ack(vm) == 0x70 + 3
    assert read_irr_isr(vm, 0xA0) == (0x00, 0x08)
    assert read_irr_isr(vm, 0x20) == (0x00, 0x04)
    outb(vm, 0xA0, 0x20)                   # the handler's EOIs: slave then master
    outb(vm, 0x20, 0x20)
    assert read_irr_isr(vm, 0xA0) == (0, 0) and read_irr_isr(vm, 0x20) == (0, 0)


def test_masked_slave_line_never_reaches_the_master(vm: SimVmFd) -> None:
    init(vm)
    outb(vm, 0xA1, 0xFF)
    pulse(vm, 11)
    assert read_irr_isr(vm, 0xA0)[0] == 0x08
    assert read_irr_isr(vm, 0x20)[0] == 0x00 and vm.kvm.vpic.output == 0


def test_elcr_masks_and_level_lines_follow_the_pin(vm: SimVmFd) -> None:
    init(vm)
    outb(vm, 0x4D0, 0xFF)
    outb(vm, 0x4D1, 0xFF)
    assert (inb(vm, 0x4D0), inb(vm, 0x4D1)) == (0xF8, 0xDE)     # IRQ0-2, 8 and 13 are edge only
    line(vm, 10, 1)
    assert ack(vm) == 0x72
    assert read_irr_isr(vm, 0xA0) == (0x04, 0x04)                  # level: the IRR stays while high
    outb(vm, 0xA0, 0x20)
    outb(vm, 0x20, 0x20)
    assert vm.kvm.vpic.output == 1                                 # still high: requests again
    line(vm, 10, 0)                                                # drops before the INTA:
    assert read_irr_isr(vm, 0xA0)[0] == 0
    assert vm.kvm.vpic.output == 1 and ack(vm) == 0x77             # the master's IRQ2 edge stays: slave spurious


def test_level_line_from_two_sources_is_their_or(vm: SimVmFd) -> None:
    init(vm)
    outb(vm, 0x4D1, 0x08)                                          # IRQ11 level
    s = vm.kvm.vpic
    i8259.kvm_pic_set_irq(s, 11, 0, 1)
    i8259.kvm_pic_set_irq(s, 11, 2, 1)
    i8259.kvm_pic_set_irq(s, 11, 0, 0)
    assert read_irr_isr(vm, 0xA0)[0] == 0x08                       # source 2 still holds it
    i8259.kvm_pic_set_irq(s, 11, 2, 0)
    assert read_irr_isr(vm, 0xA0)[0] == 0x00


def test_auto_eoi_leaves_nothing_in_service(vm: SimVmFd) -> None:
    init(vm, icw4=0x03)                    # ICW4: 8086 mode, AEOI
    pulse(vm, 2 + 4)
    assert ack(vm) == 0x0E
    assert read_irr_isr(vm, 0x20) == (0, 0)
    pulse(vm, 6)
    assert vm.kvm.vpic.output == 1         # nothing blocks the next one


def test_poll_command_acknowledges_without_a_vector(vm: SimVmFd) -> None:
    init(vm)
    pulse(vm, 5)
    outb(vm, 0x20, 0x0C)                   # OCW3 poll
    assert inb(vm, 0x20) == 5
    assert read_irr_isr(vm, 0x20) == (0, 0)
    outb(vm, 0x20, 0x0C)
    assert inb(vm, 0x20) == 7              # nothing pending


def test_special_fully_nested_lets_the_slave_nest(vm: SimVmFd) -> None:
    init(vm, icw4=0x11)                    # ICW4: SFNM on the master
    pulse(vm, 12)
    assert ack(vm) == 0x74
    pulse(vm, 9)                           # a higher slave line while IRQ2 is in service at the master
    assert vm.kvm.vpic.output == 1 and ack(vm) == 0x71


# ---------------------------------------------------------------- into the vCPU

def test_extint_reaches_the_vcpu_only_through_lvt0(vm: SimVmFd) -> None:
    vcpu = vm.kvm.vcpus[0]
    init(vm)
    pulse(vm, 0)
    assert lapic.kvm_apic_accept_pic_intr(vcpu)                # reset: LVT0 unmasked ExtINT (BSP)
    assert x86.kvm_cpu_has_extint(vcpu) and x86.kvm_cpu_has_injectable_intr(vcpu)
    lapic.kvm_lapic_set_reg(vcpu.arch.apic, lapic.APIC_LVT0, lapic.APIC_DM_EXTINT | lapic.APIC_LVT_MASKED)
    assert not x86.kvm_cpu_has_extint(vcpu)
    lapic.kvm_lapic_set_reg(vcpu.arch.apic, lapic.APIC_LVT0, lapic.APIC_DM_EXTINT)
    assert x86.kvm_cpu_get_interrupt(vcpu) == 0x08 and not x86.kvm_cpu_has_extint(vcpu)


def test_raised_output_requests_an_event_check(vm: SimVmFd) -> None:
    vcpu = vm.kvm.vcpus[0]
    init(vm)
    vcpu.requests.discard("KVM_REQ_EVENT")
    pulse(vm, 1)
    assert "KVM_REQ_EVENT" in vcpu.requests


def test_irq_line_needs_the_irqchip() -> None:
    with SimKvm().create_vm() as vm:
        with pytest.raises(BackendError, match="ENXIO") as e:
            vm.irq_line(0, 1)
        assert e.value.errno == 6
        with pytest.raises(BackendError, match="ENOENT"):
            vm.create_pit2()


def test_set_irqchip_round_trips_and_recomputes_output(vm: SimVmFd) -> None:
    st = vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER)
    st.irq_base, st.irr, st.imr = 0x20, 0x02, 0x00
    vm.set_irqchip(KVM_IRQCHIP_PIC_MASTER, st)
    assert vm.kvm.vpic.output == 1 and ack(vm) == 0x21
    with pytest.raises(BackendError, match="EINVAL"):
        vm.get_irqchip(2)                   # no in-kernel IO-APIC in the model
