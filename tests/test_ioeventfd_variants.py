"""KVM_IOEVENTFD beyond the length-0 doorbell (scenarios/ioeventfd-variants-*.yaml, guests/ioeventfd_variants.S),
one KVM_RUN at a time: what matches (ioeventfd_in_range: address, length, datamatch) is taken in the kernel
with no userspace exit; anything else on the same address exits as usual."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import make_machine
from kvmsim.uapi import KvmExit
from simvm import kvm_run, sym

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", ["long64", "prot32"])
def test_each_ioeventfd_takes_only_its_exact_write(mode: str) -> None:
    m = make_machine(load_scenario(ROOT / f"scenarios/ioeventfd-variants-{mode}.yaml"))
    try:
        efd, vcpu = m.ioeventfds, m.vcpu
        # datamatch: 0x1234 kicked silently; 0x4321 is the first exit
        run = kvm_run(m, KvmExit.MMIO)
        assert (run.mmio.phys_addr, run.mmio.len, run.mmio.is_write) == (0xD0000080, 4, 1)
        assert bytes(run.mmio.data[:4]) == (0x4321).to_bytes(4, "little")
        assert (efd["datamatch"].count, efd["pio"].count) == (1, 0)
        # port ioeventfd: OUTW taken by KVM_PIO_BUS and skipped in the kernel, so the next exit is the
        # OUTB of another length, with RIP still on it (kvm_fast_pio: complete_fast_pio_out skips later)
        run = kvm_run(m, KvmExit.IO)
        assert (run.io.port, run.io.size, run.io.direction) == (0x510, 1, 1)
        assert vcpu.get_regs().rip == sym(m, "pio_miss") == sym(m, "pio_hit") + 2
        assert efd["pio"].count == 1
        # len 4 without datamatch: a 2-byte write is no match
        run = kvm_run(m, KvmExit.MMIO)
        assert (run.mmio.phys_addr, run.mmio.len) == (0xD00000C0, 2) and efd["len4"].count == 0
        run = kvm_run(m, KvmExit.IO)
        assert (run.io.port, efd["len4"].count) == (0xF4, 1)
        assert vcpu.get_regs().rsi == 0x600D
        stat = vcpu.vcpu.stat
        assert stat.exits_by_reason["IO_INSTRUCTION"] == 3 and stat.emulation_by_type[0] == 0
    finally:
        m.close()


def test_datamatch_compares_the_written_value_at_the_ioeventfd_length() -> None:
    from kvmsim.kvm.iobus import Ioeventfd

    dev = Ioeventfd(0x1000, 4, 0x1234)
    assert dev.write(0x1000, 4, (0x1234).to_bytes(4, "little")) == 0
    assert dev.write(0x1000, 4, (0x11234).to_bytes(4, "little")) != 0    # all 4 bytes compared
    assert dev.write(0x1000, 2, (0x1234).to_bytes(2, "little")) != 0     # length first
    assert dev.write(0x1004, 4, (0x1234).to_bytes(4, "little")) != 0     # address exact
    assert dev.read_count() == 1 and dev.count == 0


def test_datamatch_with_length_0_is_einval_as_in_kvm_ioeventfd() -> None:
    from kvmsim.errors import BackendError
    from kvmsim.kvm.kvm_main import SimKvm

    vm = SimKvm().create_vm()
    with pytest.raises(BackendError, match="EINVAL"):
        vm.ioeventfd(0xD0000040, 0, datamatch=5)
    assert vm.kvm.buses["KVM_MMIO_BUS"].ranges == [] and vm.kvm.buses["KVM_FAST_MMIO_BUS"].ranges == []
    vm.ioeventfd(0xD0000040, 0)                                  # without datamatch: accepted
    assert len(vm.kvm.buses["KVM_FAST_MMIO_BUS"].ranges) == 1
