"""CR8 without an in-kernel irqchip (KVM keeps vcpu->arch.cr8), the same facts on the sim and on
/dev/kvm: KVM_SET_SREGS/KVM_GET_SREGS round-trip it, KVM_RUN first applies run->cr8 (the userspace
LAPIC's TPR) and post_kvm_run_save reports it back, a reserved run->cr8 is EINVAL, and a guest's
MOV CR8 reads back."""

from __future__ import annotations

import pytest

from kvmsim.errors import BackendError
from kvmsim.scenario.runner import make_machine
from kvmsim.uapi import KvmExit
from tests.simvm import scenario

EINVAL = 22
BACKENDS = ["sim", pytest.param("kvm", marks=pytest.mark.kvm)]


def _run(m) -> int:
    """KVM_RUN as an errno-style int on both backends (the real one raises for errors)."""
    try:
        return m.vcpu.run()
    except BackendError as e:
        return -EINVAL if "EINVAL" in str(e) else -1


@pytest.fixture(params=BACKENDS)
def machine(request):
    m = make_machine(scenario("out %al,$0x80\nout %al,$0x80\nhlt\n", "long64"), backend=request.param)
    assert _run(m) == 0 and m.vcpu.mapping.run.exit_reason == KvmExit.IO
    yield m
    m.close()


def test_sregs_cr8_round_trips_and_kvm_run_applies_run_cr8(machine) -> None:
    fd = machine.vcpu
    run = fd.mapping.run
    assert fd.get_sregs().cr8 == 0 and run.cr8 == 0
    s = fd.get_sregs()
    s.cr8 = 7
    fd.set_sregs(s)
    assert fd.get_sregs().cr8 == 7
    run.cr8 = 3                                   # what a userspace LAPIC would put there
    assert _run(machine) == 0 and run.exit_reason == KvmExit.IO
    assert fd.get_sregs().cr8 == 3 and run.cr8 == 3
    run.cr8 = 0x10                                # bits 63:4 reserved
    assert _run(machine) == -EINVAL
    assert fd.get_sregs().cr8 == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_mov_cr8_reads_back(backend: str) -> None:
    """Raising the TPR only: lowering it is KVM_EXIT_SET_TPR on VMX, which kvm_pvm (emulating
    MOV CR8) does not give, so the differential fact is the read-back."""
    asm = "mov $5,%rax\nmov %rax,%cr8\nmov %cr8,%rbx\nout %al,$0x80\nhlt\n"
    m = make_machine(scenario(asm, "long64"), backend=backend)
    try:
        assert _run(m) == 0 and m.vcpu.mapping.run.exit_reason == KvmExit.IO
        assert m.vcpu.get_regs().rbx == 5 and m.vcpu.get_sregs().cr8 == 5 and m.vcpu.mapping.run.cr8 == 5
    finally:
        m.close()
