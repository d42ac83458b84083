"""Control and debug registers, the same facts on the sim and on /dev/kvm.

CR8 without an in-kernel irqchip (KVM keeps vcpu->arch.cr8): KVM_SET_SREGS/KVM_GET_SREGS round-trip
it, KVM_RUN first applies run->cr8 (the userspace LAPIC's TPR) and post_kvm_run_save reports it
back, a reserved run->cr8 is EINVAL, and a guest's MOV CR8 reads back.  DR6/DR7 keep their fixed
bits and DR5 aliases DR7 (CR4.DE clear); CR0/CR4 bits a guest sets reach KVM_GET_SREGS."""

from __future__ import annotations

import contextlib

import pytest

from kvmsim.errors import BackendError
from kvmsim.scenario.runner import make_machine
from kvmsim.uapi import KvmExit
from tests.simvm import scenario
from backends import BACKENDS

EINVAL = 22


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


@contextlib.contextmanager
def _at_the_out(asm: str, backend: str, before=None):
    """A long64 guest run on `backend` up to its OUT (the state is read there)."""
    m = make_machine(scenario(asm, "long64"), backend=backend)
    try:
        if before is not None:
            before(m)
        assert _run(m) == 0 and m.vcpu.mapping.run.exit_reason == KvmExit.IO
        yield m
    finally:
        m.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_debug_registers_read_back_with_fixed_bits(backend: str) -> None:
    asm = ("mov $1,%rax\nmov %rax,%dr7\nmov %dr7,%rbx\nxor %eax,%eax\nmov %rax,%dr6\nmov %dr6,%rcx\n"
           "mov $0x1234,%rax\nmov %rax,%dr0\nmov %dr0,%rdx\nmov %dr5,%rsi\nout %al,$0x80\nhlt\n")
    with _at_the_out(asm, backend) as m:
        r = m.vcpu.get_regs()
        assert (r.rbx, r.rcx, r.rdx, r.rsi) == (0x401, 0xFFFF0FF0, 0x1234, 0x401)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cr0_cr4_bits_the_guest_sets_reach_kvm_get_sregs(backend: str) -> None:
    sregs0: list = []
    asm = ("mov %cr4,%rax\nor $0x40000,%eax\nmov %rax,%cr4\nmov %cr0,%rax\nor $4,%eax\nmov %rax,%cr0\n"
           "out %al,$0x80\nhlt\n")
    with _at_the_out(asm, backend, before=lambda m: sregs0.append(m.vcpu.get_sregs())) as m:
        s, s0 = m.vcpu.get_sregs(), sregs0[0]
        assert s.cr4 == s0.cr4 | 0x40000 and s.cr0 == s0.cr0 | 4     # OSXSAVE, EM; nothing else moved


ENTER_LONG_MODE = """
    lea pml4, %eax
    lea pdpt, %ebx
    or $3, %ebx
    mov %ebx, (%eax)
    lea pd, %ecx
    or $3, %ecx
    mov %ecx, pdpt
    movl $0x83, pd                  # 2 MB identity page
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax                  # PAE
    mov %eax, %cr4
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax                 # EFER.LME
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax            # PG: EFER.LMA, compatibility mode (CS.L still 0)
    mov %eax, %cr0
    mov $0x3f8, %dx
    out %al, (%dx)
    hlt
    .p2align 12
pml4: .fill 4096, 1, 0
pdpt: .fill 4096, 1, 0
pd:   .fill 4096, 1, 0
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_enables_long_mode_with_mov_cr4_wrmsr_efer_mov_cr0(backend: str) -> None:
    m = make_machine(scenario(ENTER_LONG_MODE, "prot32"), backend=backend)
    try:
        assert _run(m) == 0 and m.vcpu.mapping.run.exit_reason == KvmExit.IO
        s = m.vcpu.get_sregs()
        assert (s.cr0, s.cr4, s.efer, s.cs.l) == (0x80000031, 0x20, 0x500, 0)
        if backend == "sim":    # CR4 and CR0 exit (host-owned PAE, PG); CR3 does not with EPT
            assert m.vcpu.vcpu.stat.exits_by_reason["CR_ACCESS"] == 2
    finally:
        m.close()
