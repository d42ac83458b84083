"""Fast PIO (reference §3.3, §3.4, §8.1) seen through the ioctl API: where RIP is between an OUT/IN
exit and the next KVM_RUN, how IN results land in RAX, the port 0x7e quirk, immediate_exit, and
an in-kernel device on KVM_PIO_BUS."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from kvmsim.scenario.runner import Machine
from kvmsim.uapi import KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KvmExit
from tests.simvm import kvm_run, machine, sym

EINTR = 4

OUT_GUEST = """
        .include "kvmsim.inc"
        GUEST_ENTRY
out1:   outb    %al, $0x80
out2:   outb    %al, $0x81
        hlt
moved:  outb    %al, $0x82
        hlt
"""


@pytest.fixture
def m():
    mach = machine(OUT_GUEST)
    yield mach
    mach.close()


def rip(m: Machine) -> int:
    return m.vcpu.get_regs().rip


def set_regs(m: Machine, **values: int) -> None:
    regs = m.vcpu.get_regs()
    for k, v in values.items():
        setattr(regs, k, v)
    m.vcpu.set_regs(regs)


# ---------------------------------------------------------------- OUT: complete_fast_pio_out

def test_out_exit_leaves_rip_at_the_out(m) -> None:
    run = kvm_run(m, KvmExit.IO)
    assert (run.io.direction, run.io.port, run.io.size, run.io.count) == (KVM_EXIT_IO_OUT, 0x80, 1, 1)
    assert rip(m) == sym(m, "out1")


def test_next_kvm_run_skips_the_out(m) -> None:
    kvm_run(m, KvmExit.IO)
    run = kvm_run(m, KvmExit.IO)
    assert run.io.port == 0x81
    assert rip(m) == sym(m, "out2")


def test_userspace_moving_rip_cancels_the_skip(m) -> None:
    """complete_fast_pio_out: the linear RIP changed, so return 1 without skipping."""
    kvm_run(m, KvmExit.IO)
    set_regs(m, rip=sym(m, "moved"))
    run = kvm_run(m, KvmExit.IO)
    assert run.io.port == 0x82
    assert rip(m) == sym(m, "moved")


def test_out_data_is_in_the_pio_page_at_data_offset(m) -> None:
    set_regs(m, rax=0x1234_5678_9ABC_DEF0)
    run = kvm_run(m, KvmExit.IO)
    assert run.io.data_offset == 4096
    assert bytes(m.vcpu.mapping.buf[4096:4097]) == b"\xf0"


def test_immediate_exit_runs_the_completion_then_returns_eintr(m) -> None:
    """§8.1 steps 6-7: the cui has run (RIP past the OUT) before KVM_RUN returns -EINTR."""
    kvm_run(m, KvmExit.IO)
    run = m.vcpu.mapping.run
    run.immediate_exit = 1
    assert m.vcpu.run() == -EINTR
    assert rip(m) == sym(m, "out2")
    assert run.exit_reason == KvmExit.IO          # left untouched (as /dev/kvm does), not KVM_EXIT_INTR
    run.immediate_exit = 0
    run = kvm_run(m, KvmExit.IO)
    assert run.io.port == 0x81 and rip(m) == sym(m, "out2")   # skipped once, not twice


def test_immediate_exit_without_pending_io_returns_eintr_and_does_not_run(m) -> None:
    m.vcpu.mapping.run.immediate_exit = 1
    assert m.vcpu.run() == -EINTR
    assert rip(m) == sym(m, "out1")


# ---------------------------------------------------------------- port 0x7e quirk

QUIRK_GUEST = """
        .include "kvmsim.inc"
        GUEST_ENTRY
out7e:  outb    %al, $0x7e
after:  outb    %al, $0x80
        hlt
"""


def test_port_0x7e_out_advances_rip_before_the_exit() -> None:
    """KVM_X86_QUIRK_OUT_7E_INC_RIP: skip first, then exit; the completion does not skip again."""
    m = machine(QUIRK_GUEST)
    try:
        run = kvm_run(m, KvmExit.IO)
        assert run.io.port == 0x7E
        assert rip(m) == sym(m, "after")
        run = kvm_run(m, KvmExit.IO)
        assert run.io.port == 0x80 and rip(m) == sym(m, "after")
    finally:
        m.close()


def test_port_0x7e_without_the_quirk_is_an_ordinary_out() -> None:
    m = machine(QUIRK_GUEST)
    try:
        m.vm.kvm.params.quirk_out_7e_inc_rip = False
        kvm_run(m, KvmExit.IO)
        assert rip(m) == sym(m, "out7e")
    finally:
        m.close()


# ---------------------------------------------------------------- IN: complete_fast_pio_in

IN_GUEST = """
        .include "kvmsim.inc"
        GUEST_ENTRY
in1:    inb     %dx, %al
hlt1:   hlt
in2:    inw     %dx, %ax
hlt2:   hlt
in4:    inl     %dx, %eax
hlt4:   hlt
"""
_MACHINES: dict[str, Machine] = {}
MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF}


def in_machine(mode: str) -> Machine:
    """One VM per mode, reused by every hypothesis example (each example resets RIP and RAX)."""
    if mode not in _MACHINES:
        _MACHINES[mode] = machine(IN_GUEST, mode)
    return _MACHINES[mode]


def teardown_module() -> None:
    for mach in _MACHINES.values():
        mach.close()
    _MACHINES.clear()


def do_in(mode: str, size: int, rax: int, device: int) -> int:
    """Run the IN of `size` with RAX = rax; userspace answers `device`; return RAX after the next exit."""
    m = in_machine(mode)
    set_regs(m, rip=sym(m, f"in{size}"), rax=rax, rdx=0x60)
    run = kvm_run(m, KvmExit.IO)
    assert (run.io.direction, run.io.port, run.io.size, run.io.count) == (KVM_EXIT_IO_IN, 0x60, size, 1)
    assert bytes(m.vcpu.mapping.io_data()) == bytes(size)          # KVM zeroes the data for IN
    m.vcpu.mapping.io_data()[:] = (device & MASK[size]).to_bytes(size, "little")
    kvm_run(m, KvmExit.HLT)
    assert rip(m) == sym(m, f"hlt{size}") + 1
    return m.vcpu.get_regs().rax


def expected_rax(size: int, rax: int, device: int) -> int:
    """x86.c complete_fast_pio_in: val = size < 4 ? RAX : 0, then the low `size` bytes replaced."""
    val = device & MASK[size]
    return (rax & ~MASK[size]) | val if size < 4 else val


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([1, 2, 4]), rax=st.integers(0, (1 << 64) - 1), device=st.integers(0, 0xFFFF_FFFF))
def test_in_merges_or_zero_extends_rax_long64(size: int, rax: int, device: int) -> None:
    assert do_in("long64", size, rax, device) == expected_rax(size, rax, device)


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([1, 2, 4]), rax=st.integers(0, 0xFFFF_FFFF), device=st.integers(0, 0xFFFF_FFFF))
def test_in_merges_or_zero_extends_rax_real16(size: int, rax: int, device: int) -> None:
    assert do_in("real16", size, rax, device) == expected_rax(size, rax, device)


def test_in_keeps_rax_high_half_in_real16() -> None:
    """/dev/kvm keeps RAX[63:32] across a real-mode 8-bit IN (0x1122334455667799), and so must we."""
    rax = 0x1122_3344_5566_7788
    assert do_in("real16", 1, rax, 0x99) == expected_rax(1, rax, 0x99)


def test_in_with_userspace_moving_rip_leaves_rax_alone() -> None:
    """complete_fast_pio_in: RIP changed → pio.count = 0, return 1: no RAX write, no skip."""
    m = in_machine("long64")
    set_regs(m, rip=sym(m, "in1"), rax=0xAAAA, rdx=0x60)
    kvm_run(m, KvmExit.IO)
    m.vcpu.mapping.io_data()[:] = b"\x55"
    set_regs(m, rip=sym(m, "in2"))
    run = kvm_run(m, KvmExit.IO)
    assert run.io.size == 2 and rip(m) == sym(m, "in2")
    assert m.vcpu.get_regs().rax == 0xAAAA
    m.vcpu.mapping.io_data()[:] = b"\x00\x00"
    kvm_run(m, KvmExit.HLT)


def test_in_completion_runs_before_immediate_exit() -> None:
    m = in_machine("long64")
    set_regs(m, rip=sym(m, "in2"), rax=0xFFFF_FFFF_FFFF_FFFF, rdx=0x60)
    kvm_run(m, KvmExit.IO)
    m.vcpu.mapping.io_data()[:] = b"\x34\x12"
    m.vcpu.mapping.run.immediate_exit = 1
    try:
        assert m.vcpu.run() == -EINTR
    finally:
        m.vcpu.mapping.run.immediate_exit = 0
    regs = m.vcpu.get_regs()
    assert (regs.rax, regs.rip) == (0xFFFF_FFFF_FFFF_1234, sym(m, "hlt2"))


# ---------------------------------------------------------------- in-kernel device on KVM_PIO_BUS

def test_ioeventfd_on_pio_bus_takes_the_out_without_a_userspace_exit(m) -> None:
    efd = m.vm.ioeventfd(0x80, 1, pio=True)
    run = kvm_run(m, KvmExit.IO)
    assert run.io.port == 0x81                    # the OUT to 0x80 never reached userspace
    assert rip(m) == sym(m, "out2")               # kvm_fast_pio skipped it at once
    assert efd.read_count() == 1


@pytest.mark.parametrize("length,datamatch,rax", [(2, None, 0), (1, 0x42, 0x41)],
                         ids=["length-mismatch", "datamatch-mismatch"])
def test_ioeventfd_that_does_not_match_leaves_the_out_to_userspace(m, length, datamatch, rax) -> None:
    efd = m.vm.ioeventfd(0x80, length, pio=True, datamatch=datamatch)
    set_regs(m, rax=rax)
    run = kvm_run(m, KvmExit.IO)
    assert run.io.port == 0x80 and rip(m) == sym(m, "out1")
    assert efd.read_count() == 0


def test_ioeventfd_datamatch_hit(m) -> None:
    efd = m.vm.ioeventfd(0x80, 1, pio=True, datamatch=0x42)
    set_regs(m, rax=0x1142)
    run = kvm_run(m, KvmExit.IO)
    assert run.io.port == 0x81 and efd.read_count() == 1
