"""Runs release what they made: a hundred VMs in one process, with the cycle collector off, leave
resident and reserved memory where one VM left them (unicorn's engine, 1 GiB of reserved code
buffer, used to linger until the next garbage collection)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import make_machine, run_machine, run_scenario

REPO = Path(__file__).resolve().parents[1]
STATUS = Path("/proc/self/status")


def _vm_kib() -> dict[str, int]:
    out = {}
    for line in STATUS.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmSize"):
            out[key] = int(rest.split()[0])
    return out


@pytest.mark.skipif(not STATUS.exists(), reason="needs /proc/self/status")
def test_hundred_vms_keep_memory_flat() -> None:
    sc = load_scenario(REPO / "scenarios" / "cpuid.yaml")
    first = run_scenario(sc)
    assert first.stop.reason == "debug-exit" and first.userspace, "the scenario must run to its end"
    was = gc.isenabled()
    gc.disable()
    try:
        before = _vm_kib()
        for _ in range(100):
            run_scenario(sc)
        after = _vm_kib()
    finally:
        if was:
            gc.enable()
    assert after["VmRSS"] - before["VmRSS"] < 50 * 1024, (before, after)
    # One unicorn engine reserves about 1 GiB; a hundred leaked ones would show here at once.
    assert after["VmSize"] - before["VmSize"] < 512 * 1024, (before, after)


def test_close_releases_guest_ram_and_engine() -> None:
    sc = load_scenario(REPO / "scenarios" / "cpuid.yaml")
    m = make_machine(sc)
    run_machine(m)
    hw = m.vcpu.vcpu.hw
    bufs = [buf for _gpa, buf in m.ram]
    m.close()
    assert hw.uc is None
    assert bufs and all(buf.closed for buf in bufs)
    assert not m.vm.kvm.memslots


def test_machine_and_vm_are_context_managers() -> None:
    from kvmsim.kvm.kvm_main import SimKvm

    sc = load_scenario(REPO / "scenarios" / "cpuid.yaml")
    with make_machine(sc) as m:
        res = run_machine(m)
        hw, bufs = m.vcpu.vcpu.hw, [b for _gpa, b in m.ram]
    assert res.stop.reason == "debug-exit" and hw.uc is None
    assert bufs and all(b.closed for b in bufs) and not m.ram
    with SimKvm().create_vm() as vm:
        cpu = vm.create_vcpu(0).vcpu.hw
        assert cpu.uc is not None
    assert cpu.uc is None and not vm.kvm.vcpus
