"""Model of arch/x86/kvm/i8259.c: the in-kernel pair of 8259A PICs that KVM_CREATE_IRQCHIP makes.

Master at ports 0x20/0x21, slave at 0xa0/0xa1 cascaded on the master's IRQ2, and the PIIX ELCR
(0x4d0/0x4d1, edge or level per line) are devices on KVM_PIO_BUS: the guest's IN/OUT to them are
handled in the kernel and never reach userspace.  The master's output (kvm_pic.output) is what
kvm_cpu_has_extint reads; kvm_cpu_get_interrupt acknowledges it through kvm_pic_read_irq (INTA).
Simplified: one vCPU, so pic_unlock's "kick the vCPU that takes ExtINT" is KVM_REQ_EVENT on it
(the PIC only changes while that vCPU is out of the guest, in KVM or its VMM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvmsim.kvm import irqchip, lapic
from kvmsim.probe import PROBES, tracepoint

if TYPE_CHECKING:
    from kvmsim.kvm.vcpu import Kvm

EOPNOTSUPP = 95
PIC_NUM_PINS = 16
KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE = 0, 1
# ICW1 / OCW3 / OCW2 bits of the 8259A command port (port 0).
ICW1_INIT, ICW1_IC4, ICW1_SNGL, ICW1_LTIM = 0x10, 0x01, 0x02, 0x08
OCW3_SELECT, OCW3_POLL, OCW3_RR, OCW3_RIS, OCW3_ESMM, OCW3_SMM = 0x08, 0x04, 0x02, 0x01, 0x40, 0x20
# OCW2 commands (bits 7:5): rotate-in-AEOI clear/set, (specific) EOI, rotate on EOI, set priority.
OCW2_ROTATE_AEOI_CLEAR, OCW2_EOI, OCW2_SPECIFIC_EOI, OCW2_ROTATE_AEOI_SET = 0, 1, 3, 4
OCW2_ROTATE_EOI, OCW2_SET_PRIORITY, OCW2_ROTATE_SPECIFIC_EOI = 5, 6, 7
PIC_PORTS = {0x20: (0, 0), 0x21: (0, 1), 0xA0: (1, 0), 0xA1: (1, 1)}   # port -> (chip, A0)
ELCR_PORTS = (0x4D0, 0x4D1)


@dataclass
class KvmKpicState:
    """struct kvm_kpic_state: one 8259A (field order as the uapi's struct kvm_pic_state)."""

    last_irr: int = 0                  # line levels seen, for edge detection
    irr: int = 0
    imr: int = 0
    isr: int = 0
    priority_add: int = 0              # the line with the highest priority (rotation)
    irq_base: int = 0                  # ICW2: vector of line 0
    read_reg_select: int = 0           # OCW3 RR/RIS: port 0 reads ISR (1) or IRR (0)
    poll: int = 0
    special_mask: int = 0
    init_state: int = 0                # 0: ready; 1, 2, 3: expecting ICW2, ICW3, ICW4
    auto_eoi: int = 0
    rotate_on_auto_eoi: int = 0
    special_fully_nested_mode: int = 0
    init4: int = 0                     # ICW1 IC4: an ICW4 follows
    elcr: int = 0                      # PIIX edge/level control: 1 = level
    elcr_mask: int = 0
    index: int = 0                     # 0 master, 1 slave (the kernel compares against &pics[0])


@dataclass
class KvmPic:
    """struct kvm_pic."""

    kvm: "Kvm"
    pics: list[KvmKpicState] = field(default_factory=lambda: [KvmKpicState(index=0, elcr_mask=0xF8),
                                                              KvmKpicState(index=1, elcr_mask=0xDE)])
    output: int = 0                    # the master's INT pin
    wakeup_needed: bool = False
    irq_states: list[int] = field(default_factory=lambda: [0] * PIC_NUM_PINS)   # per pin: sources' bits


def pic_irqchip(kvm: "Kvm") -> KvmPic | None:
    return kvm.vpic


def pic_unlock(s: KvmPic) -> None:
    """The lock's release: if the output rose, the vCPU that accepts ExtINT re-checks its events."""
    wakeup, s.wakeup_needed = s.wakeup_needed, False
    if not wakeup:
        return
    for vcpu in s.kvm.vcpus:
        if lapic.kvm_apic_accept_pic_intr(vcpu):
            vcpu.requests.add("KVM_REQ_EVENT")       # kvm_vcpu_kick: the vCPU is out of the guest
            return


def pic_clear_isr(s: KvmKpicState, pics_state: KvmPic, irq: int) -> None:
    """The line leaves the ISR (EOI, auto-EOI, poll); irq-ack notifiers (the PIT's) hear of it."""
    s.isr &= ~(1 << irq)
    pin = irq + 8 * s.index
    irqchip.kvm_notify_acked_irq(pics_state.kvm, KVM_IRQCHIP_PIC_SLAVE if pin >= 8 else KVM_IRQCHIP_PIC_MASTER, pin)


def pic_set_irq1(s: KvmKpicState, irq: int, level: int) -> int:
    """A line's new level: an edge (or a high level on a level-triggered line) sets the IRR.  1 if
    it was newly raised, 0 if already pending (coalesced), -1 if the line is masked."""
    mask = 1 << irq
    ret = 1
    if s.elcr & mask:                                 # level triggered: the IRR follows the line
        if level:
            ret = int(not s.irr & mask)
            s.irr |= mask
            s.last_irr |= mask
        else:
            s.irr &= ~mask
            s.last_irr &= ~mask
    elif level:                                       # edge triggered: only a rising edge counts
        if not s.last_irr & mask:
            ret = int(not s.irr & mask)
            s.irr |= mask
        s.last_irr |= mask
    else:
        s.last_irr &= ~mask
    return -1 if s.imr & mask else ret


def get_priority(s: KvmKpicState, mask: int) -> int:
    """Rank (0 highest) of the highest-priority line in `mask`, rotation applied; 8 for none."""
    if not mask:
        return 8
    priority = 0
    while not mask & (1 << ((priority + s.priority_add) & 7)):
        priority += 1
    return priority


def pic_get_irq(s: KvmKpicState) -> int:
    """The line this 8259A would interrupt for now (unmasked, pending, above what is in service), or -1."""
    priority = get_priority(s, s.irr & ~s.imr)
    if priority == 8:
        return -1
    in_service = s.isr
    if s.special_fully_nested_mode and s.index == 0:
        in_service &= ~(1 << 2)                       # SFNM: the slave's line does not block the slave
    if priority < get_priority(s, in_service):
        return (priority + s.priority_add) & 7
    return -1


def pic_irq_request(kvm: "Kvm", level: int) -> None:
    s = kvm.vpic
    if not s.output:
        s.wakeup_needed = True
    s.output = level


def pic_update_irq(s: KvmPic) -> None:
    """After any change: the slave's request pulses the master's IRQ2, then the master's output."""
    if pic_get_irq(s.pics[1]) >= 0:
        pic_set_irq1(s.pics[0], 2, 1)
        pic_set_irq1(s.pics[0], 2, 0)
    pic_irq_request(s.kvm, int(pic_get_irq(s.pics[0]) >= 0))


def kvm_pic_update_irq(s: KvmPic) -> None:
    pic_update_irq(s)
    pic_unlock(s)


def __kvm_irq_line_state(irq_state: list[int], pin: int, irq_source_id: int, level: int) -> int:
    """A line is high while any source (userspace, the PIT, ...) holds it high."""
    if level:
        irq_state[pin] |= 1 << irq_source_id
    else:
        irq_state[pin] &= ~(1 << irq_source_id)
    return int(bool(irq_state[pin]))


def kvm_pic_set_irq(s: KvmPic, irq: int, irq_source_id: int, level: int) -> int:
    """An ISA line (0-15) from one source; the return as pic_set_irq1's."""
    irq_level = __kvm_irq_line_state(s.irq_states, irq, irq_source_id, level)
    chip = s.pics[irq >> 3]
    ret = pic_set_irq1(chip, irq & 7, irq_level)
    pic_update_irq(s)
    if PROBES.enabled:
        tracepoint("kvm_pic_set_irq", chip=irq >> 3, pin=irq & 7, elcr=chip.elcr, imr=chip.imr,
                   coalesced=ret == 0)
    pic_unlock(s)
    return ret


def kvm_pic_clear_all(s: KvmPic, irq_source_id: int) -> None:
    for i in range(PIC_NUM_PINS):
        s.irq_states[i] &= ~(1 << irq_source_id)


def pic_intack(s: KvmKpicState, pics_state: KvmPic, irq: int) -> None:
    """INTA: the line goes in service; an edge request is consumed (a level one stays while the
    line is high); auto-EOI ends it at once."""
    s.isr |= 1 << irq
    if not s.elcr & (1 << irq):
        s.irr &= ~(1 << irq)
    if s.auto_eoi:
        if s.rotate_on_auto_eoi:
            s.priority_add = (irq + 1) & 7
        pic_clear_isr(s, pics_state, irq)


def kvm_pic_read_irq(kvm: "Kvm") -> int:
    """The interrupt acknowledge cycle: the vector of the highest request, through the slave for
    IRQ2; with no request any more, the spurious IRQ7 of the chip that had none."""
    s = kvm.vpic
    s.output = 0
    irq = pic_get_irq(s.pics[0])
    if irq >= 0:
        pic_intack(s.pics[0], s, irq)
        if irq == 2:
            irq2 = pic_get_irq(s.pics[1])
            if irq2 >= 0:
                pic_intack(s.pics[1], s, irq2)
            else:
                irq2 = 7                               # spurious on the slave
            intno = s.pics[1].irq_base + irq2
        else:
            intno = s.pics[0].irq_base + irq
    else:
        intno = s.pics[0].irq_base + 7                 # spurious on the master
    pic_update_irq(s)
    pic_unlock(s)
    return intno


def kvm_pic_reset(s: KvmKpicState, pics_state: KvmPic) -> None:
    """ICW1: the chip restarts its initialisation; pending edges are dropped (and acked to their
    notifiers when a vCPU takes ExtINT), level requests stay."""
    edge_irr = s.irr & ~s.elcr
    s.last_irr = 0
    s.irr &= s.elcr
    s.imr = 0
    s.priority_add = 0
    s.special_mask = 0
    s.read_reg_select = 0
    if not s.init4:
        s.special_fully_nested_mode = 0
        s.auto_eoi = 0
    s.init_state = 1
    if not any(lapic.kvm_apic_accept_pic_intr(v) for v in pics_state.kvm.vcpus):
        return
    for irq in range(8):
        if edge_irr & (1 << irq):
            pic_clear_isr(s, pics_state, irq)


def pic_ioport_write(s: KvmKpicState, pics_state: KvmPic, addr: int, val: int) -> None:
    """Port 0: ICW1, OCW2 or OCW3 by bits 4:3; port 1: ICW2-4 during initialisation, else OCW1 (IMR).
    Simplified (as KVM): single mode (ICW1 SNGL) and ICW1's level-triggered mode (LTIM) are ignored."""
    if addr & 1 == 0:
        if val & ICW1_INIT:
            s.init4 = val & ICW1_IC4
            kvm_pic_reset(s, pics_state)
        elif val & OCW3_SELECT:
            if val & OCW3_POLL:
                s.poll = 1
            if val & OCW3_RR:
                s.read_reg_select = val & OCW3_RIS
            if val & OCW3_ESMM:
                s.special_mask = (val >> 5) & 1
        else:
            cmd = val >> 5
            if cmd in (OCW2_ROTATE_AEOI_CLEAR, OCW2_ROTATE_AEOI_SET):
                s.rotate_on_auto_eoi = cmd >> 2
            elif cmd in (OCW2_EOI, OCW2_ROTATE_EOI):          # non-specific: the highest in service
                priority = get_priority(s, s.isr)
                if priority != 8:
                    irq = (priority + s.priority_add) & 7
                    if cmd == OCW2_ROTATE_EOI:
                        s.priority_add = (irq + 1) & 7
                    pic_clear_isr(s, pics_state, irq)
                    pic_update_irq(pics_state)
            elif cmd == OCW2_SPECIFIC_EOI:
                pic_clear_isr(s, pics_state, val & 7)
                pic_update_irq(pics_state)
            elif cmd == OCW2_SET_PRIORITY:
                s.priority_add = (val + 1) & 7
                pic_update_irq(pics_state)
            elif cmd == OCW2_ROTATE_SPECIFIC_EOI:
                irq = val & 7
                s.priority_add = (irq + 1) & 7
                pic_clear_isr(s, pics_state, irq)
                pic_update_irq(pics_state)
            # cmd 2: no operation
        return
    if s.init_state == 0:                               # OCW1: the mask; mask notifiers (the PIT's)
        imr_diff = s.imr ^ val
        off = 8 * s.index
        s.imr = val
        for irq in range(8):
            if imr_diff & (1 << irq):
                irqchip.kvm_fire_mask_notifiers(pics_state.kvm, KVM_IRQCHIP_PIC_SLAVE if off else KVM_IRQCHIP_PIC_MASTER,
                                                 irq + off, bool(s.imr & (1 << irq)))
        pic_update_irq(pics_state)
    elif s.init_state == 1:                             # ICW2
        s.irq_base = val & 0xF8
        s.init_state = 2
    elif s.init_state == 2:                             # ICW3 (the cascade wiring is fixed)
        s.init_state = 3 if s.init4 else 0
    elif s.init_state == 3:                             # ICW4
        s.special_fully_nested_mode = (val >> 4) & 1
        s.auto_eoi = (val >> 1) & 1
        s.init_state = 0


def pic_poll_read(s: KvmKpicState, pics_state: KvmPic, addr1: int) -> int:
    """OCW3 poll: the read is the acknowledge (the line number), without a vector."""
    ret = pic_get_irq(s)
    if ret >= 0:
        if addr1 >> 7:                                   # polling the slave ends the master's IRQ2 too
            pics_state.pics[0].isr &= ~(1 << 2)
            pics_state.pics[0].irr &= ~(1 << 2)
        s.irr &= ~(1 << ret)
        pic_clear_isr(s, pics_state, ret)
        if addr1 >> 7 or ret != 2:
            pic_update_irq(pics_state)
    else:
        ret = 0x07
        pic_update_irq(pics_state)
    return ret


def pic_ioport_read(s: KvmKpicState, pics_state: KvmPic, addr1: int) -> int:
    if s.poll:
        ret = pic_poll_read(s, pics_state, addr1)
        s.poll = 0
        return ret
    if addr1 & 1 == 0:
        return s.isr if s.read_reg_select else s.irr
    return s.imr


def elcr_ioport_write(s: KvmKpicState, val: int) -> None:
    s.elcr = val & s.elcr_mask


def picdev_in_range(addr: int) -> bool:
    return addr in PIC_PORTS or addr in ELCR_PORTS


class PicDevice:
    """kvm_pic's dev_master / dev_slave / dev_elcr on KVM_PIO_BUS: byte accesses only (others are
    dropped, a read of them gives zeros)."""

    def __init__(self, pic: KvmPic) -> None:
        self.pic = pic

    def write(self, addr: int, length: int, data: bytes) -> int:
        if not picdev_in_range(addr):
            return -EOPNOTSUPP
        if length != 1:
            return 0                                   # pr_pic_unimpl("non byte write")
        s = self.pic
        if addr in PIC_PORTS:
            pic_ioport_write(s.pics[addr >> 7], s, addr, data[0])
        else:
            elcr_ioport_write(s.pics[addr & 1], data[0])
        pic_unlock(s)
        return 0

    def read(self, addr: int, length: int, buf: bytearray) -> int:
        if not picdev_in_range(addr):
            return -EOPNOTSUPP
        if length != 1:
            buf[:length] = bytes(length)
            return 0
        s = self.pic
        if addr in PIC_PORTS:
            buf[0] = pic_ioport_read(s.pics[addr >> 7], s, addr) & 0xFF
        else:
            buf[0] = s.pics[addr & 1].elcr
        pic_unlock(s)
        return 0


def kvm_pic_init(kvm: "Kvm") -> KvmPic:
    """KVM_CREATE_IRQCHIP's PIC: both chips zeroed, ELCR masks of the PIIX (lines 0-2 and 8, 13
    are edge-only), three ranges on KVM_PIO_BUS."""
    s = KvmPic(kvm)
    dev = PicDevice(s)
    bus = kvm.buses["KVM_PIO_BUS"]
    bus.register(0x20, 2, dev)
    bus.register(0xA0, 2, dev)
    bus.register(0x4D0, 2, dev)
    kvm.vpic = s
    return s


# ---------------------------------------------------------------- KVM_GET_IRQCHIP / KVM_SET_IRQCHIP

PIC_STATE_FIELDS = ("last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select", "poll",
                    "special_mask", "init_state", "auto_eoi", "rotate_on_auto_eoi", "special_fully_nested_mode",
                    "init4", "elcr", "elcr_mask")


def kvm_get_pic_state(kvm: "Kvm", chip_id: int) -> dict[str, int]:
    c = kvm.vpic.pics[chip_id]
    return {f: getattr(c, f) for f in PIC_STATE_FIELDS}


def kvm_set_pic_state(kvm: "Kvm", chip_id: int, state: dict[str, int]) -> None:
    """kvm_vm_ioctl_set_irqchip for a PIC: the chip's registers as given, then the output recomputed."""
    s = kvm.vpic
    c = s.pics[chip_id]
    for f in PIC_STATE_FIELDS:
        setattr(c, f, state[f] & 0xFF)
    kvm_pic_update_irq(s)
