"""MOV CR / CLTS / LMSW / MOV DR executed by a guest, end to end: which of them exit under the
controls KVM set (hw/vmcs.py cr_write_exits and friends, applied by hw/ctrlregs.py) and what the
guest and KVM_GET_SREGS see afterwards."""

from __future__ import annotations

import pytest

from kvmsim.hw.vmcs import CPU_BASED_MOV_DR_EXITING
from kvmsim.kvm import cr
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine

def _run(asm: str, mode: str = "long64"):
    m = machine(asm + "\nout %al,$0x80\nhlt\n", mode=mode)
    kvm_run(m, KvmExit.IO)
    return m


def _exits(m, reason: str) -> int:
    return m.vcpu.vcpu.stat.exits_by_reason.get(reason, 0)


def test_setting_a_host_owned_cr4_bit_exits_once_and_reads_back() -> None:
    m = _run("mov %cr4,%rax\nor $0x40000,%eax\nmov %rax,%cr4\nmov %cr4,%rbx")   # OSXSAVE
    try:
        assert _exits(m, "CR_ACCESS") == 1                        # the write; MOV from CR4 never exits
        assert m.vcpu.get_regs().rbx & cr.X86_CR4_OSXSAVE
        assert m.vcpu.get_sregs().cr4 & cr.X86_CR4_OSXSAVE
        assert m.vcpu.vcpu.hw.vmcs.cr4_read_shadow & cr.X86_CR4_OSXSAVE
    finally:
        m.close()


def test_guest_owned_bits_change_without_an_exit() -> None:
    """CR4.PGE and CR0.TS (CLTS too) belong to the guest: no CR_ACCESS exit, the CPU has them."""
    m = _run("mov %cr4,%rax\nxor $0x80,%eax\nmov %rax,%cr4\n"
             "mov %cr0,%rax\nor $8,%eax\nmov %rax,%cr0\nmov %cr0,%rbx\nclts\nmov %cr0,%rcx")
    try:
        before = m.vcpu.vcpu.hw.vmcs.cr4_read_shadow
        assert _exits(m, "CR_ACCESS") == 0
        assert (m.vcpu.get_sregs().cr4 ^ before) & cr.X86_CR4_PGE
        regs = m.vcpu.get_regs()
        assert regs.rbx & cr.X86_CR0_TS and not regs.rcx & cr.X86_CR0_TS
    finally:
        m.close()


def test_mov_dr_exits_once_then_runs_natively_and_reads_back() -> None:
    """The lazy DR switch: the first MOV DR exits and handle_dr lets it (and the next) run natively;
    the OUT's exit syncs the registers back into KVM and intercepts MOV DR again."""
    m = _run("mov $0x1234,%rax\nmov %rax,%dr1\nmov %dr1,%rbx")
    try:
        assert _exits(m, "DR_ACCESS") == 1
        assert m.vcpu.get_regs().rbx == 0x1234 and m.vcpu.vcpu.arch.db[1] == 0x1234
        assert m.vcpu.vcpu.hw.vmcs.cpu_based_vm_exec_control & CPU_BASED_MOV_DR_EXITING
        assert not m.vcpu.vcpu.arch.switch_db_regs
    finally:
        m.close()


def test_lmsw_setting_mp_exits() -> None:
    m = _run("smsw %ax\nor $2,%ax\nlmsw %ax\nmov %cr0,%ebx", mode="prot32")
    try:
        assert _exits(m, "CR_ACCESS") == 1
        assert m.vcpu.get_regs().rbx & cr.X86_CR0_MP and m.vcpu.get_sregs().cr0 & cr.X86_CR0_MP
    finally:
        m.close()


@pytest.mark.parametrize("mode", ["prot32", "long64"])
def test_host_owned_cr_bits_the_guest_set_reach_kvm_get_sregs(mode: str) -> None:
    """The writes exit (host-owned bits) and handle_cr keeps the read shadows: KVM's view of
    CR0/CR4 is the guest's, CR4.OSXSAVE and CR0.EM set by the guest are reported."""
    m = _run("mov %cr4,%eax\nor $0x40000,%eax\nmov %eax,%cr4\nmov %cr0,%eax\nor $4,%eax\nmov %eax,%cr0"
             if mode == "prot32" else
             "mov %cr4,%rax\nor $0x40000,%eax\nmov %rax,%cr4\nmov %cr0,%rax\nor $4,%eax\nmov %rax,%cr0", mode)
    try:
        assert _exits(m, "CR_ACCESS") == 2
        s = m.vcpu.get_sregs()
        assert s.cr4 & cr.X86_CR4_OSXSAVE and s.cr0 & cr.X86_CR0_EM
        v = m.vcpu.vcpu.hw.vmcs
        assert v.cr4_read_shadow & cr.X86_CR4_OSXSAVE and v.cr0_read_shadow & cr.X86_CR0_EM
    finally:
        m.close()
