"""Test helper: a VM built from inline guest asm on the sim backend, driven one KVM_RUN at a time.

Tests drive `KVM_RUN` themselves (no VMM loop) so they can look at kvm_run and the
registers between every return to userspace, as a kvm selftest does.
"""

from __future__ import annotations

from typing import Any

from kvmsim.scenario.runner import Machine, make_machine
from kvmsim.scenario.schema import Scenario
from kvmsim.uapi import KvmExit

NO_DEVICES: list[dict[str, Any]] = []


def scenario(asm: str, mode: str = "long64", devices: list[dict[str, Any]] | None = None,
             **extra: Any) -> Scenario:
    doc: dict[str, Any] = {"name": "t", "description": "test guest",
                           "guest": {"asm": asm, "mode": mode}, **extra}
    if devices is not None:
        doc["devices"] = devices
    return Scenario.model_validate(doc)


def machine(asm: str, mode: str = "long64", **kw: Any) -> Machine:
    """Build (not run) a VM whose guest is `asm`; the caller closes it."""
    return make_machine(scenario(asm, mode, **kw))


def kvm_run(m: Machine, expect: KvmExit | None = None) -> Any:
    """One KVM_RUN; returns kvm_run (asserting the ioctl returned 0 and, if given, the exit reason)."""
    r = m.vcpu.run()
    run = m.vcpu.mapping.run
    assert r == 0, f"KVM_RUN returned {r}"
    if expect is not None:
        assert KvmExit(run.exit_reason) == expect, KvmExit(run.exit_reason).name
    return run


def sym(m: Machine, name: str) -> int:
    return m.image.symbols[name]


def outb(vm: Any, port: int, val: int) -> None:
    """A byte OUT to an in-kernel device on the VM's KVM_PIO_BUS (no vCPU, no exit)."""
    assert vm.kvm.buses["KVM_PIO_BUS"].write(port, 1, bytes([val])) == 0


def inb(vm: Any, port: int) -> int:
    """A byte IN from an in-kernel device on the VM's KVM_PIO_BUS."""
    buf = bytearray(1)
    assert vm.kvm.buses["KVM_PIO_BUS"].read(port, 1, buf) == 0
    return buf[0]
