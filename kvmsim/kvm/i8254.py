"""Model of arch/x86/kvm/i8254.c: the in-kernel 8254 PIT of KVM_CREATE_PIT2.

Ports 0x40-0x43 are a device on KVM_PIO_BUS (no exit to userspace).  Channel 0 drives ISA IRQ0:
in KVM an hrtimer fires at each period (pit_timer_fn) and the kvm-pit kthread raises and lowers
GSI 0 (pit_do_work); with reinjection (the default) a tick the guest has not yet acknowledged
(EOI at the PIC) is held back and delivered after the ack.  Channels 1 and 2 only count.
Time is the virtual clock of lapic.py (retired guest instructions, 1 ns each, plus exits and
halted sleep): the hrtimer is a deadline on that clock, and its expiry interrupts the guest as the
host's timer interrupt would (an EXTERNAL_INTERRUPT exit, hw.host_timer_deadline), so a run is
the same every time.  Simplified: the kthread's work runs before the vCPU's next entry (not on
another CPU), the host clock is the BSP's, and the speaker port (KVM_PIT_SPEAKER_DUMMY), the HPET
legacy mode and the NMI-watchdog route through LVT0 are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from kvmsim.kvm import irq_comm, irqchip, lapic

if TYPE_CHECKING:
    from kvmsim.kvm.vcpu import Kvm

EOPNOTSUPP = 95
KVM_PIT_BASE_ADDRESS = 0x40
KVM_PIT_MEM_LENGTH = 4
KVM_PIT_CHANNEL_MASK = 0x3
KVM_PIT_FREQ = 1193182                 # Hz: the 8254's input clock on a PC
NSEC_PER_SEC = 1_000_000_000
MIN_TIMER_PERIOD_NS = 200_000          # kvm.min_timer_period_us = 200
KVM_PIT_FLAGS_HPET_LEGACY = 0x1
KVM_PIT_SPEAKER_DUMMY = 1
RW_STATE_LSB, RW_STATE_MSB, RW_STATE_WORD0, RW_STATE_WORD1 = 1, 2, 3, 4
CHANNEL_STATE_FIELDS = ("count", "latched_count", "count_latched", "status_latched", "status", "read_state",
                        "write_state", "write_latch", "rw_mode", "mode", "bcd", "gate", "count_load_time")


@dataclass
class KvmKpitChannelState:
    """struct kvm_kpit_channel_state (the uapi's kvm_pit_channel_state)."""

    count: int = 0                     # the initial count, 1..0x10000
    latched_count: int = 0
    count_latched: int = 0             # a latched count waits to be read (its RW_STATE)
    status_latched: int = 0
    status: int = 0
    read_state: int = 0
    write_state: int = 0
    write_latch: int = 0
    rw_mode: int = 0
    mode: int = 0
    bcd: int = 0
    gate: int = 0
    count_load_time: int = 0           # virtual ns (channels 1 and 2 count from it)


@dataclass
class KvmKpitState:
    """struct kvm_kpit_state: the channels and channel 0's hrtimer."""

    channels: list[KvmKpitChannelState] = field(default_factory=lambda: [KvmKpitChannelState() for _ in range(3)])
    flags: int = 0
    is_periodic: bool = False
    period: int = 0                    # ns
    timer_expires: int = 0             # the hrtimer's expiry (virtual ns)
    timer_armed: bool = False
    reinject: bool = False
    pending: int = 0                   # ticks not yet delivered (reinject)
    irq_ack: int = 1                   # the last tick was acknowledged at the PIC


@dataclass
class KvmPit:
    """struct kvm_pit."""

    kvm: "Kvm"
    pit_state: KvmKpitState = field(default_factory=KvmKpitState)
    irq_source_id: int = 0
    expired_queued: bool = False       # pit->expired queued on the kvm-pit kthread
    ack_notifier: Callable[[], None] | None = None        # irq_ack_notifier (gsi 0)
    mask_notifier: Callable[[bool], Any] | None = None    # mask_notifier (irq 0)


def ktime_get(kvm: "Kvm") -> int:
    """The host clock as the PIT's hrtimer sees it: the BSP's virtual clock (0 before it exists)."""
    return lapic.kvm_virtual_ns(kvm.vcpus[0]) if kvm.vcpus else 0


def mul_div(a: int, mul: int, div: int) -> int:
    return a * mul // div


# ---------------------------------------------------------------- counting

def pit_set_gate(pit: KvmPit, channel: int, val: int) -> None:
    c = pit.pit_state.channels[channel]
    if c.mode in (1, 2, 3, 5) and c.gate < val:       # a rising gate restarts the count
        c.count_load_time = ktime_get(pit.kvm)
    c.gate = val


def __kpit_elapsed(pit: KvmPit) -> int:
    """Channel 0: ns into the current period (from the hrtimer's time left), 0 when stopped."""
    ps = pit.pit_state
    if not ps.period:
        return 0
    remaining = ps.timer_expires - ktime_get(pit.kvm)
    return ps.period - remaining


def kpit_elapsed(pit: KvmPit, c: KvmKpitChannelState, channel: int) -> int:
    if channel == 0:
        return __kpit_elapsed(pit)
    return ktime_get(pit.kvm) - c.count_load_time


def pit_get_count(pit: KvmPit, channel: int) -> int:
    """The counter now: counting down from the initial count at KVM_PIT_FREQ, reloading in modes
    2 and 3 (mode 3 counts by two), wrapping at 16 bits in the others."""
    c = pit.pit_state.channels[channel]
    d = mul_div(kpit_elapsed(pit, c, channel), KVM_PIT_FREQ, NSEC_PER_SEC)
    if c.mode in (0, 1, 4, 5):
        return (c.count - d) & 0xFFFF
    if c.mode == 3:
        return c.count - (2 * d) % c.count
    return c.count - d % c.count


def pit_get_out(pit: KvmPit, channel: int) -> int:
    """The OUT pin now, by mode (the read-back status's bit 7)."""
    c = pit.pit_state.channels[channel]
    d = mul_div(kpit_elapsed(pit, c, channel), KVM_PIT_FREQ, NSEC_PER_SEC)
    if c.mode == 1:
        return int(d < c.count)
    if c.mode == 2:
        return int(d % c.count == 0 and d != 0)
    if c.mode == 3:
        return int(d % c.count < (c.count + 1) >> 1)
    if c.mode in (4, 5):
        return int(d == c.count)
    return int(d >= c.count)                           # mode 0 (and any other)


def pit_latch_count(pit: KvmPit, channel: int) -> None:
    c = pit.pit_state.channels[channel]
    if not c.count_latched:
        c.latched_count = pit_get_count(pit, channel)
        c.count_latched = c.rw_mode


def pit_latch_status(pit: KvmPit, channel: int) -> None:
    """Read-back status: OUT, access mode, mode, BCD.  Simplified (as KVM): NULL COUNT (bit 6) is 0."""
    c = pit.pit_state.channels[channel]
    if not c.status_latched:
        c.status = (pit_get_out(pit, channel) << 7) | (c.rw_mode << 4) | (c.mode << 1) | c.bcd
        c.status_latched = 1


# ---------------------------------------------------------------- the timer and IRQ0

def kvm_pit_ack_irq(pit: KvmPit) -> None:
    """IRQ0 was acknowledged (EOI): a tick held back meanwhile goes now."""
    ps = pit.pit_state
    ps.irq_ack = 1
    if ps.pending > 0:                                  # atomic_dec_if_positive(&pending) > 0
        ps.pending -= 1
        if ps.pending > 0:
            pit.expired_queued = True


def pit_do_work(pit: KvmPit) -> None:
    """The kvm-pit kthread: a pulse on GSI 0 (unless reinjection waits for the last one's ack)."""
    ps = pit.pit_state
    if ps.reinject:
        ack, ps.irq_ack = ps.irq_ack, 0
        if not ack:
            return
    irq_comm.kvm_set_irq(pit.kvm, pit.irq_source_id, 0, 1)
    irq_comm.kvm_set_irq(pit.kvm, pit.irq_source_id, 0, 0)


def pit_timer_fn(pit: KvmPit) -> None:
    """The hrtimer expired: count the tick, queue the work, re-arm a periodic timer."""
    ps = pit.pit_state
    if ps.reinject:
        ps.pending += 1
    pit.expired_queued = True
    if ps.is_periodic:
        ps.timer_expires += ps.period
    else:
        ps.timer_armed = False


def kvm_pit_reset_reinject(pit: KvmPit) -> None:
    pit.pit_state.pending = 0
    pit.pit_state.irq_ack = 1


def pit_mask_notifer(pit: KvmPit, mask: bool) -> None:
    """IRQ0 unmasked at the PIC: ticks missed while masked are forgotten."""
    if not mask:
        kvm_pit_reset_reinject(pit)


def kvm_pit_set_reinject(pit: KvmPit, reinject: bool) -> None:
    ps = pit.pit_state
    if ps.reinject == reinject:
        return
    kvm = pit.kvm
    if reinject:
        kvm_pit_reset_reinject(pit)
        irqchip.kvm_register_irq_ack_notifier(kvm, 0, pit.ack_notifier)
        irqchip.kvm_register_irq_mask_notifier(kvm, 0, pit.mask_notifier)
    else:
        irqchip.kvm_unregister_irq_ack_notifier(kvm, pit.ack_notifier)
        irqchip.kvm_unregister_irq_mask_notifier(kvm, pit.mask_notifier)
    ps.reinject = reinject


def destroy_pit_timer(pit: KvmPit) -> None:
    pit.pit_state.timer_armed = False
    pit.expired_queued = False                          # kthread_flush_work: simplified, dropped


def create_pit_timer(pit: KvmPit, val: int, is_period: bool) -> None:
    """(Re)start channel 0's hrtimer for `val` PIT cycles; periodic ones no shorter than
    min_timer_period_us.  Only with the IO-APIC of a full in-kernel irqchip, as in KVM."""
    ps = pit.pit_state
    if not pit.kvm.irqchip or ps.flags & KVM_PIT_FLAGS_HPET_LEGACY:
        return
    interval = mul_div(val, NSEC_PER_SEC, KVM_PIT_FREQ)
    destroy_pit_timer(pit)
    ps.period = interval
    ps.is_periodic = is_period
    kvm_pit_reset_reinject(pit)
    if ps.is_periodic and ps.period < MIN_TIMER_PERIOD_NS:
        ps.period = MIN_TIMER_PERIOD_NS
    ps.timer_expires = ktime_get(pit.kvm) + interval
    ps.timer_armed = True


def pit_load_count(pit: KvmPit, channel: int, val: int) -> None:
    """A new initial count (0 means 0x10000); on channel 0 it restarts the timer by mode."""
    ps = pit.pit_state
    if val == 0:
        val = 0x10000
    ps.channels[channel].count = val
    if channel != 0:
        ps.channels[channel].count_load_time = ktime_get(pit.kvm)
        return
    mode = ps.channels[0].mode
    if mode in (0, 1, 4):
        create_pit_timer(pit, val, False)
    elif mode in (2, 3):
        create_pit_timer(pit, val, True)
    else:
        destroy_pit_timer(pit)


def kvm_pit_load_count(pit: KvmPit, channel: int, val: int, hpet_legacy_start: bool) -> None:
    if hpet_legacy_start:
        saved_mode = pit.pit_state.channels[0].mode
        pit.pit_state.channels[0].mode = 0xFF           # no timer while the HPET has the line
        pit_load_count(pit, channel, val)
        pit.pit_state.channels[0].mode = saved_mode
    else:
        pit_load_count(pit, channel, val)


# ---------------------------------------------------------------- ports 0x40-0x43

def pit_in_range(addr: int) -> bool:
    return KVM_PIT_BASE_ADDRESS <= addr < KVM_PIT_BASE_ADDRESS + KVM_PIT_MEM_LENGTH


def pit_ioport_write(pit: KvmPit, addr: int, length: int, data: bytes) -> int:
    """Port 0x43: the control word (counter select with access/mode/BCD, counter latch, read-back);
    0x40-0x42: the count, LSB, MSB or LSB then MSB."""
    if not pit_in_range(addr):
        return -EOPNOTSUPP
    ps = pit.pit_state
    val = data[0] if data else 0
    addr &= KVM_PIT_CHANNEL_MASK
    if addr == 3:
        channel = val >> 6
        if channel == 3:                                  # read-back: bit 1+n selects counter n
            for channel in range(3):
                if val & (2 << channel):
                    if not val & 0x20:
                        pit_latch_count(pit, channel)
                    if not val & 0x10:
                        pit_latch_status(pit, channel)
        else:
            s = ps.channels[channel]
            access = (val >> 4) & KVM_PIT_CHANNEL_MASK
            if access == 0:
                pit_latch_count(pit, channel)
            else:
                s.rw_mode = s.read_state = s.write_state = access
                s.mode = (val >> 1) & 7
                if s.mode > 5:
                    s.mode -= 4                           # 6 and 7 are modes 2 and 3
                s.bcd = val & 1
        return 0
    s = ps.channels[addr]
    if s.write_state == RW_STATE_MSB:
        pit_load_count(pit, addr, val << 8)
    elif s.write_state == RW_STATE_WORD0:
        s.write_latch = val
        s.write_state = RW_STATE_WORD1
    elif s.write_state == RW_STATE_WORD1:
        pit_load_count(pit, addr, s.write_latch | (val << 8))
        s.write_state = RW_STATE_WORD0
    else:                                                 # RW_STATE_LSB (and a never-programmed channel)
        pit_load_count(pit, addr, val)
    return 0


def pit_ioport_read(pit: KvmPit, addr: int, length: int, buf: bytearray) -> int:
    """A latched status first, then a latched count, else the live count by the read state."""
    if not pit_in_range(addr):
        return -EOPNOTSUPP
    addr &= KVM_PIT_CHANNEL_MASK
    if addr == 3:
        return 0                                          # the control port reads nothing (buf as it was)
    s = pit.pit_state.channels[addr]
    if s.status_latched:
        s.status_latched = 0
        ret = s.status
    elif s.count_latched:
        if s.count_latched == RW_STATE_MSB:
            ret = s.latched_count >> 8
            s.count_latched = 0
        elif s.count_latched == RW_STATE_WORD0:
            ret = s.latched_count & 0xFF
            s.count_latched = RW_STATE_MSB
        else:
            ret = s.latched_count & 0xFF
            s.count_latched = 0
    else:
        count = pit_get_count(pit, addr)
        if s.read_state == RW_STATE_MSB:
            ret = (count >> 8) & 0xFF
        elif s.read_state == RW_STATE_WORD0:
            ret = count & 0xFF
            s.read_state = RW_STATE_WORD1
        elif s.read_state == RW_STATE_WORD1:
            ret = (count >> 8) & 0xFF
            s.read_state = RW_STATE_WORD0
        else:
            ret = count & 0xFF
    n = min(length, 4)                                    # memcpy of an int: up to 4 bytes
    buf[:n] = (ret & 0xFFFF_FFFF).to_bytes(4, "little")[:n]
    return 0


class PitDevice:
    """pit_dev_ops on KVM_PIO_BUS."""

    def __init__(self, pit: KvmPit) -> None:
        self.pit = pit

    def read(self, addr: int, length: int, buf: bytearray) -> int:
        return pit_ioport_read(self.pit, addr, length, buf)

    def write(self, addr: int, length: int, data: bytes) -> int:
        return pit_ioport_write(self.pit, addr, length, data)


def kvm_pit_reset(pit: KvmPit) -> None:
    """All channels without a mode (0xff: no timer), gates high but the speaker's, count 0x10000."""
    pit.pit_state.flags = 0
    for i, c in enumerate(pit.pit_state.channels):
        c.mode = 0xFF
        c.gate = int(i != 2)
        pit_load_count(pit, i, 0)
    kvm_pit_reset_reinject(pit)


def kvm_create_pit(kvm: "Kvm", flags: int) -> KvmPit:
    pit = KvmPit(kvm)
    pit.irq_source_id = irq_comm.kvm_request_irq_source_id(kvm)
    pit.ack_notifier = lambda: kvm_pit_ack_irq(pit)
    pit.mask_notifier = lambda mask: pit_mask_notifer(pit, mask)
    kvm_pit_reset(pit)
    kvm_pit_set_reinject(pit, True)
    kvm.buses["KVM_PIO_BUS"].register(KVM_PIT_BASE_ADDRESS, KVM_PIT_MEM_LENGTH, PitDevice(pit))
    return pit


# ---------------------------------------------------------------- the host side, on virtual time

def kvm_pit_host_deadline(kvm: "Kvm") -> int | None:
    """When (virtual ns) the PIT's hrtimer next interrupts the host, or None."""
    pit = kvm.vpit
    if pit is None or not pit.pit_state.timer_armed:
        return None
    return pit.pit_state.timer_expires


def kvm_pit_run_host(kvm: "Kvm") -> None:
    """What the host did by now: hrtimer expiries due (hrtimer_interrupt), then the kthread's work."""
    pit = kvm.vpit
    if pit is None:
        return
    ps = pit.pit_state
    now = ktime_get(kvm)
    while ps.timer_armed and ps.timer_expires <= now:
        pit_timer_fn(pit)
        if pit.expired_queued:
            pit.expired_queued = False
            pit_do_work(pit)
    if pit.expired_queued:
        pit.expired_queued = False
        pit_do_work(pit)


# ---------------------------------------------------------------- KVM_GET_PIT2 / KVM_SET_PIT2

def kvm_vm_ioctl_get_pit2(kvm: "Kvm") -> tuple[list[dict[str, int]], int]:
    ps = kvm.vpit.pit_state
    return [{f: getattr(c, f) for f in CHANNEL_STATE_FIELDS} for c in ps.channels], ps.flags


def kvm_vm_ioctl_set_pit2(kvm: "Kvm", channels: list[dict[str, int]], flags: int) -> None:
    """The channels as given, then each count loaded again (channel 0's timer restarts by its mode)."""
    pit = kvm.vpit
    ps = pit.pit_state
    start = not ps.flags & KVM_PIT_FLAGS_HPET_LEGACY and bool(flags & KVM_PIT_FLAGS_HPET_LEGACY)
    for c, st in zip(ps.channels, channels):
        for f in CHANNEL_STATE_FIELDS:
            setattr(c, f, st[f])
    ps.flags = flags
    for i in range(3):
        kvm_pit_load_count(pit, i, ps.channels[i].count, start)
