"""The in-kernel PIT (kvm/i8254.py) against the 8254 datasheet and KVM's i8254.c: control words,
LSB/MSB/word access, counting down at 1.193182 MHz on virtual time, modes 2 and 3 reloading with
their period, the counter latch and the read-back command (count and status), IRQ0 through the
PIC with reinjection held until the EOI, and a halted vCPU woken by the tick with the virtual clock
advanced (no wall time).  The virtual clock is set by hand (retired instructions = ns)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvmsim.errors import BackendError
from kvmsim.kvm import i8254, i8259, lapic, x86
from kvmsim.kvm.kvm_main import SimKvm, SimVmFd
from tests.simvm import inb, outb
from kvmsim.kvm.vcpu import KvmVcpu

FREQ = 1193182


@pytest.fixture
def vm() -> Iterator[SimVmFd]:
    vm = SimKvm().create_vm()
    vm.create_irqchip()
    vm.create_pit2()
    vm.create_vcpu(0)
    yield vm
    vm.close()


def vcpu0(vm: SimVmFd) -> KvmVcpu:
    return vm.kvm.vcpus[0]


def at_ns(vm: SimVmFd, ns: int) -> None:
    """Move the virtual clock (nothing else ran: no exits, no sleep) to `ns`."""
    v = vcpu0(vm)
    v.hw.guest_insns = ns - lapic._not_retiring_ns(v)
    assert lapic.kvm_virtual_ns(v) == ns


def program(vm: SimVmFd, channel: int, mode: int, count: int, access: int = 3) -> None:
    outb(vm, 0x43, channel << 6 | access << 4 | mode << 1)
    if access in (1, 3):
        outb(vm, 0x40 + channel, count & 0xFF)
    if access in (2, 3):
        outb(vm, 0x40 + channel, count >> 8 & 0xFF)


def read_word(vm: SimVmFd, channel: int) -> int:
    lo = inb(vm, 0x40 + channel)
    return lo | inb(vm, 0x40 + channel) << 8


def ticks_to_ns(ticks: int) -> int:
    return -(-ticks * 1_000_000_000 // FREQ)          # the first ns at which `ticks` cycles have passed


def init_pic(vm: SimVmFd) -> None:
    for port, val in ((0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01), (0x21, 0xFE),
                      (0xA0, 0x11), (0xA1, 0x70), (0xA1, 0x02), (0xA1, 0x01), (0xA1, 0xFF)):
        outb(vm, port, val)


# ---------------------------------------------------------------- creation, reset

def test_create_pit2_registers_ports_and_resets(vm: SimVmFd) -> None:
    st = vm.get_pit2()
    assert [c.mode for c in st.channels] == [0xFF] * 3 and [c.gate for c in st.channels] == [1, 1, 0]
    assert [c.count for c in st.channels] == [0x10000] * 3
    assert not vm.kvm.vpit.pit_state.timer_armed
    with pytest.raises(BackendError, match="EEXIST"):
        vm.create_pit2()


def test_control_port_reads_nothing(vm: SimVmFd) -> None:
    buf = bytearray(b"\x5a")
    assert vm.kvm.buses["KVM_PIO_BUS"].read(0x43, 1, buf) == 0 and buf == b"\x5a"


# ---------------------------------------------------------------- counting

def test_mode2_counts_down_and_reloads(vm: SimVmFd) -> None:
    at_ns(vm, 0)
    program(vm, 0, 2, 1000)
    assert read_word(vm, 0) == 1000                    # nothing elapsed
    at_ns(vm, ticks_to_ns(300))
    assert read_word(vm, 0) == 700
    at_ns(vm, ticks_to_ns(1000 + 250))                 # one reload later (the timer has run on)
    i8254.kvm_pit_run_host(vm.kvm)
    assert read_word(vm, 0) == 750
    ps = vm.kvm.vpit.pit_state
    assert ps.is_periodic and ps.period == 1000 * 1_000_000_000 // FREQ


def test_mode3_counts_by_two(vm: SimVmFd) -> None:
    at_ns(vm, 0)
    program(vm, 0, 3, 1000)
    at_ns(vm, ticks_to_ns(100))
    assert read_word(vm, 0) == 800
    at_ns(vm, ticks_to_ns(600))                        # past half the period: the second half-count
    assert read_word(vm, 0) == 1000 - (1200 % 1000)


def test_mode0_wraps_at_16_bits_and_count_zero_is_65536(vm: SimVmFd) -> None:
    at_ns(vm, 0)
    program(vm, 1, 0, 5)                               # channel 1: counts from its load time
    at_ns(vm, ticks_to_ns(7))
    assert read_word(vm, 1) == (5 - 7) & 0xFFFF
    program(vm, 2, 0, 0)
    assert vm.get_pit2().channels[2].count == 0x10000


def test_lsb_only_and_msb_only_access(vm: SimVmFd) -> None:
    at_ns(vm, 0)
    program(vm, 2, 0, 0x34, access=1)                  # LSB only: count 0x34
    assert vm.get_pit2().channels[2].count == 0x34
    assert inb(vm, 0x42) == 0x34 and inb(vm, 0x42) == 0x34   # every read is the LSB
    program(vm, 2, 0, 0x1200, access=2)                # MSB only: count 0x1200
    assert vm.get_pit2().channels[2].count == 0x1200
    assert inb(vm, 0x42) == 0x12


def test_modes_6_and_7_are_2_and_3(vm: SimVmFd) -> None:
    outb(vm, 0x43, 0 << 6 | 3 << 4 | 6 << 1)
    outb(vm, 0x43, 1 << 6 | 3 << 4 | 7 << 1)
    st = vm.get_pit2()
    assert (st.channels[0].mode, st.channels[1].mode) == (2, 3)


# ---------------------------------------------------------------- latch and read-back

def test_counter_latch_freezes_the_value_until_read(vm: SimVmFd) -> None:
    at_ns(vm, 0)
    program(vm, 0, 2, 5000)
    at_ns(vm, ticks_to_ns(1000))
    outb(vm, 0x43, 0x00)                               # counter latch, channel 0
    at_ns(vm, ticks_to_ns(2000))
    outb(vm, 0x43, 0x00)                               # a second latch before reading changes nothing
    assert read_word(vm, 0) == 4000
    assert read_word(vm, 0) == 3000                    # latch consumed: live again


def test_read_back_status_then_count(vm: SimVmFd) -> None:
    at_ns(vm, 0)
    program(vm, 0, 3, 1000)
    at_ns(vm, ticks_to_ns(100))
    outb(vm, 0x43, 0xC0 | 0x02)                        # read-back: count and status of channel 0
    status = inb(vm, 0x40)
    assert status == (1 << 7) | (3 << 4) | (3 << 1) | 0    # OUT high in the first half of mode 3
    assert read_word(vm, 0) == 800
    outb(vm, 0x43, 0xC0 | 0x20 | 0x02)                 # status only (bit 5: don't latch the count)
    at_ns(vm, ticks_to_ns(700))
    assert inb(vm, 0x40) >> 7 == 1                     # the status latched at 100: OUT high
    outb(vm, 0x43, 0xC0 | 0x20 | 0x02)
    assert inb(vm, 0x40) >> 7 == 0                     # latched at 700, the second half: OUT low
    assert read_word(vm, 0) == 1000 - (1400 % 1000)    # the count was not latched: live


# ---------------------------------------------------------------- IRQ0

def test_tick_raises_irq0_and_reinjection_waits_for_the_eoi(vm: SimVmFd) -> None:
    init_pic(vm)
    at_ns(vm, 0)
    program(vm, 0, 2, 0)                               # 65536: 54.9 ms
    period = vm.kvm.vpit.pit_state.period
    assert period == 65536 * 1_000_000_000 // FREQ
    assert i8254.kvm_pit_host_deadline(vm.kvm) == period
    at_ns(vm, period - 1)
    i8254.kvm_pit_run_host(vm.kvm)
    assert vm.kvm.vpic.output == 0
    at_ns(vm, period)
    i8254.kvm_pit_run_host(vm.kvm)
    assert vm.kvm.vpic.output == 1 and i8259.kvm_pic_read_irq(vm.kvm) == 0x08
    at_ns(vm, 3 * period)                              # two more ticks, the first not acknowledged
    i8254.kvm_pit_run_host(vm.kvm)
    ps = vm.kvm.vpit.pit_state
    assert ps.pending == 3 and vm.kvm.vpic.output == 0  # the ticks not yet acked; held back while IRQ0 is in service
    outb(vm, 0x20, 0x20)                               # EOI: the ack lets one held-back tick through
    i8254.kvm_pit_run_host(vm.kvm)
    assert vm.kvm.vpic.output == 1 and ps.pending == 2
    assert i8259.kvm_pic_read_irq(vm.kvm) == 0x08


def test_unmasking_irq0_forgets_missed_ticks(vm: SimVmFd) -> None:
    init_pic(vm)
    outb(vm, 0x21, 0xFF)
    at_ns(vm, 0)
    program(vm, 0, 2, 0)
    period = vm.kvm.vpit.pit_state.period
    at_ns(vm, 4 * period)
    i8254.kvm_pit_run_host(vm.kvm)
    assert vm.kvm.vpit.pit_state.pending == 4
    outb(vm, 0x21, 0xFE)
    assert vm.kvm.vpit.pit_state.pending == 0 and vm.kvm.vpit.pit_state.irq_ack == 1


def test_short_periodic_timer_is_limited_to_min_timer_period(vm: SimVmFd) -> None:
    program(vm, 0, 2, 2)
    assert vm.kvm.vpit.pit_state.period == i8254.MIN_TIMER_PERIOD_NS
    program(vm, 0, 0, 2)                               # one-shot: not limited
    assert vm.kvm.vpit.pit_state.period == 2 * 1_000_000_000 // FREQ and not vm.kvm.vpit.pit_state.is_periodic


def test_halted_vcpu_sleeps_to_the_tick(vm: SimVmFd) -> None:
    """vcpu_block advances the virtual clock to the PIT's deadline; the tick reaches the PIC, whose
    output wakes the vCPU (IF=1 at a boundary), all without running a guest instruction."""
    init_pic(vm)
    at_ns(vm, 0)
    program(vm, 0, 2, 0)
    v = vcpu0(vm)
    period = vm.kvm.vpit.pit_state.period
    v.hw.set_reg("rflags", 0x202)
    v.arch.mp_state_halted = True
    assert x86.vcpu_block(v) == 1
    assert not v.arch.mp_state_halted and v.arch.slept_ns == period
    assert x86.kvm_cpu_has_extint(v) and v.hw.guest_insns == 0


def test_halt_with_irq0_masked_is_forever(vm: SimVmFd) -> None:
    init_pic(vm)
    outb(vm, 0x21, 0xFF)
    program(vm, 0, 2, 0)
    v = vcpu0(vm)
    v.hw.set_reg("rflags", 0x202)
    v.arch.mp_state_halted = True
    assert x86.vcpu_block(v) < 0 and v.hw.halted_forever is not None


def test_set_pit2_restarts_channel0(vm: SimVmFd) -> None:
    at_ns(vm, 1000)
    st = vm.get_pit2()
    ch = st.channels[0]
    ch.mode, ch.rw_mode, ch.read_state, ch.write_state, ch.count = 2, 3, 3, 3, 0x10000
    vm.set_pit2(st)
    ps = vm.kvm.vpit.pit_state
    assert ps.timer_armed and ps.is_periodic and ps.timer_expires == 1000 + 65536 * 1_000_000_000 // FREQ
