"""Exits the VM-execution controls cause besides CR/DR access: descriptor-table exiting (while KVM
emulates CR4.UMIP), PAUSE-loop exiting and RDPMC exiting, driven by synthesized exits."""

from __future__ import annotations

import pytest

from kvmsim.hw.vmcs import ExitReason, Vector
from kvmsim.kvm import cr
from kvmsim.kvm.vmx import vmx_handle_exit
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine, sym

GUEST = """
    hlt
here:
    sgdt buf(%rip)
    hlt
    .p2align 3
buf:
    .quad 0, 0
"""


@pytest.fixture
def vm():
    m = machine(GUEST, mode="long64")
    kvm_run(m, KvmExit.HLT)         # powered on, nothing left pending
    yield m
    m.close()


def _exit(vcpu, reason: ExitReason, length: int, qual: int = 0) -> int:
    v = vcpu.hw.vmcs
    v.vm_exit_reason, v.exit_qualification, v.vm_exit_instruction_len = int(reason), qual, length
    return vmx_handle_exit(vcpu, 0)


def test_sgdt_exit_is_emulated_when_the_guest_set_cr4_umip(vm) -> None:
    vcpu = vm.vcpu.vcpu
    assert cr.kvm_set_cr4(vcpu, cr.kvm_read_cr4(vcpu) | cr.X86_CR4_UMIP) == 0
    here, buf = sym(vm, "here"), sym(vm, "buf")
    vcpu.hw.set_reg("rip", here)
    assert _exit(vcpu, ExitReason.GDTR_IDTR, 7) == 1
    base, limit = vcpu.hw.gdtr()
    assert vcpu.hw.read_linear(buf, 2) == limit and vcpu.hw.read_linear(buf + 2, 8) == base
    assert vcpu.hw.reg("rip") == here + 7 and not vcpu.arch.exception.pending


def test_pause_loop_exit_skips_the_pause(vm) -> None:
    vcpu = vm.vcpu.vcpu
    rip = vcpu.hw.reg("rip")
    assert _exit(vcpu, ExitReason.PAUSE_INSTRUCTION, 2) == 1 and vcpu.hw.reg("rip") == rip + 2


def test_rdpmc_without_a_vpmu_is_gp(vm) -> None:
    vcpu = vm.vcpu.vcpu
    rip = vcpu.hw.reg("rip")
    assert _exit(vcpu, ExitReason.RDPMC, 2) == 1
    exc = vcpu.arch.exception
    assert exc.pending and exc.vector == Vector.GP and exc.error_code == 0 and vcpu.hw.reg("rip") == rip
