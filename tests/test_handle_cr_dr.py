"""handle_cr and handle_dr driven by synthesized CR_ACCESS / DR_ACCESS exits on a running vCPU:
registers, RIP, the read shadows, arch.cr8 and the exceptions KVM queues (kvm_complete_insn_gp)."""

from __future__ import annotations

import pytest

from kvmsim.hw.vmcs import CPU_BASED_MOV_DR_EXITING, CrAccessType, CrExitQual, DrExitQual, ExitReason, Vector
from kvmsim.kvm import cr, vmx
from kvmsim.kvm.vmx import vmx_handle_exit
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine

GUEST = "out %al,$0x80\nhlt\n"
EFER = 0xC0000080


def _powered(mode: str):
    m = machine(GUEST, mode=mode)
    kvm_run(m, KvmExit.IO)          # powered on, stopped at the OUT
    yield m
    m.close()


@pytest.fixture(params=["prot32", "long64"])
def vm(request):
    yield from _powered(request.param)


@pytest.fixture
def prot32():
    yield from _powered("prot32")


@pytest.fixture
def long64():
    yield from _powered("long64")


def _exit(vcpu, reason: ExitReason, qual: int, length: int = 3) -> int:
    v = vcpu.hw.vmcs
    v.vm_exit_reason, v.exit_qualification, v.vm_exit_instruction_len = int(reason), qual, length
    vcpu.arch.exception.pending = False
    return vmx_handle_exit(vcpu, 0)


def mov_to_cr(vcpu, n: int, value: int, gpr: int = 0, reg: str = "rax") -> int:
    vcpu.hw.set_reg(reg, value)
    return _exit(vcpu, ExitReason.CR_ACCESS, CrExitQual(n, CrAccessType.MOV_TO_CR, gpr=gpr).encode())


def mov_from_cr(vcpu, n: int, gpr: int = 3) -> int:
    return _exit(vcpu, ExitReason.CR_ACCESS, CrExitQual(n, CrAccessType.MOV_FROM_CR, gpr=gpr).encode())


KVM_GUESTDBG_ENABLE = 1


def mov_dr(vcpu, n: int, from_dr: bool, gpr: int = 0, debugging: bool = True) -> int:
    """A DR_ACCESS exit.  debugging: userspace has KVM_SET_GUEST_DEBUG on, so handle_dr emulates
    the access (without it, KVM lets the guest run MOV DR natively: test_lazy_dr_switch)."""
    vcpu.guest_debug = KVM_GUESTDBG_ENABLE if debugging else 0
    return _exit(vcpu, ExitReason.DR_ACCESS, DrExitQual(n, from_dr, gpr).encode())


def gp_queued(vcpu) -> bool:
    exc = vcpu.arch.exception
    return exc.pending and exc.vector == Vector.GP and exc.error_code == 0


# ---------------------------------------------------------------- CR0 / CR4 and entering long mode

def test_guest_enters_long_mode_through_cr4_efer_cr0_exits(prot32) -> None:
    vcpu = prot32.vcpu.vcpu
    hw = vcpu.hw
    hw.set_cr(3, 0x10000)
    rip = hw.reg("rip")
    assert mov_to_cr(vcpu, 4, cr.X86_CR4_PAE) == 1
    assert hw.reg("rip") == rip + 3 and hw.vmcs.cr4_read_shadow == cr.X86_CR4_PAE and hw.cr(4) & cr.X86_CR4_PAE
    hw.set_reg("rcx", EFER)
    hw.set_reg("rax", cr.EFER_LME)
    hw.set_reg("rdx", 0)
    assert _exit(vcpu, ExitReason.MSR_WRITE, 0, 2) == 1                     # WRMSR(EFER.LME)
    assert hw.efer() & cr.EFER_LME and not hw.efer() & cr.EFER_LMA
    assert mov_to_cr(vcpu, 0, 0x80000011) == 1
    assert hw.efer() & cr.EFER_LMA                                           # enter_lmode
    assert hw.cr(0) & cr.X86_CR0_PG and hw.vmcs.cr0_read_shadow == 0x80000011
    assert hw.mode() == "compat"                                             # CS.L still 0
    assert prot32.vcpu.get_sregs().cr0 == 0x80000011 and not vcpu.arch.exception.pending


@pytest.mark.parametrize("value", [
    0x80000010,              # PG without PE
    0x20000011,              # NW without CD
])
def test_invalid_cr0_is_gp_and_rip_stays(vm, value: int) -> None:
    vcpu = vm.vcpu.vcpu
    rip, cr0 = vcpu.hw.reg("rip"), cr.kvm_read_cr0(vcpu)
    assert mov_to_cr(vcpu, 0, value) == 1
    assert gp_queued(vcpu) and vcpu.hw.reg("rip") == rip and cr.kvm_read_cr0(vcpu) == cr0


def test_cr0_bits_63_32_are_gp_in_64_bit_mode_and_not_operand_bits_outside(vm) -> None:
    """kvm_register_read: outside 64-bit mode the source register is its low 32 bits."""
    vcpu = vm.vcpu.vcpu
    cr0 = cr.kvm_read_cr0(vcpu)
    assert mov_to_cr(vcpu, 0, 1 << 32 | cr0) == 1
    assert gp_queued(vcpu) == (vcpu.hw.mode() == "long64") and cr.kvm_read_cr0(vcpu) == cr0


def test_cr0_reserved_bits_are_dropped_and_et_forced(prot32) -> None:
    vcpu = prot32.vcpu.vcpu
    assert mov_to_cr(vcpu, 0, 0x00000F01) == 1                               # bits 11:8 reserved
    assert not vcpu.arch.exception.pending and cr.kvm_read_cr0(vcpu) == 0x11


def test_paging_with_lme_but_without_pae_is_gp(prot32) -> None:
    vcpu = prot32.vcpu.vcpu
    vcpu.hw.set_efer(cr.EFER_LME)
    assert mov_to_cr(vcpu, 0, 0x80000011) == 1 and gp_queued(vcpu)
    assert not vcpu.hw.efer() & cr.EFER_LMA


def test_clearing_pg_in_64_bit_mode_is_gp(long64) -> None:
    vcpu = long64.vcpu.vcpu
    assert mov_to_cr(vcpu, 0, cr.kvm_read_cr0(vcpu) & ~cr.X86_CR0_PG) == 1 and gp_queued(vcpu)


def test_pae_paging_with_bad_pdpte_is_gp(prot32) -> None:
    """load_pdptrs: a present PDPTE with reserved bits 2:1 set fails the CR0.PG write."""
    vcpu = prot32.vcpu.vcpu
    ram = [mem for gpa, mem in prot32.ram if gpa == 0][0]
    base = 0x3000
    ram[base:base + 32] = (0x5007).to_bytes(8, "little") + bytes(24)        # P, RW, US: bit 2 reserved
    vcpu.hw.set_cr(3, base)
    assert mov_to_cr(vcpu, 4, cr.X86_CR4_PAE) == 1 and not vcpu.arch.exception.pending
    assert mov_to_cr(vcpu, 0, 0x80000011) == 1 and gp_queued(vcpu)
    ram[base:base + 8] = (0x5001).to_bytes(8, "little")
    assert mov_to_cr(vcpu, 0, 0x80000011) == 1 and not vcpu.arch.exception.pending


@pytest.mark.parametrize("bit", [cr.X86_CR4_VMXE, cr.X86_CR4_SMXE, cr.X86_CR4_LA57, cr.X86_CR4_PKE, 1 << 15])
def test_cr4_bits_the_guest_cpuid_does_not_allow_are_gp(vm, bit: int) -> None:
    vcpu = vm.vcpu.vcpu
    old = cr.kvm_read_cr4(vcpu)
    assert mov_to_cr(vcpu, 4, old | bit) == 1 and gp_queued(vcpu) and cr.kvm_read_cr4(vcpu) == old


def test_cr4_pae_cannot_be_cleared_in_long_mode_and_pcide_needs_it(vm) -> None:
    vcpu = vm.vcpu.vcpu
    old = cr.kvm_read_cr4(vcpu)
    if vcpu.hw.mode() == "long64":
        assert mov_to_cr(vcpu, 4, old & ~cr.X86_CR4_PAE) == 1 and gp_queued(vcpu)
        assert mov_to_cr(vcpu, 4, old | cr.X86_CR4_PCIDE) == 1 and not vcpu.arch.exception.pending
    else:
        assert mov_to_cr(vcpu, 4, old | cr.X86_CR4_PCIDE) == 1 and gp_queued(vcpu)


def test_cr4_umip_turns_on_descriptor_table_exiting(vm) -> None:
    """The modelled host (Cascade Lake) lacks UMIP: KVM emulates it with SECONDARY_EXEC_DESC."""
    from kvmsim.hw.vmcs import SECONDARY_EXEC_DESC

    vcpu = vm.vcpu.vcpu
    old = cr.kvm_read_cr4(vcpu)
    assert mov_to_cr(vcpu, 4, old | cr.X86_CR4_UMIP) == 1 and not vcpu.arch.exception.pending
    assert vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_DESC
    assert cr.kvm_read_cr4(vcpu) & cr.X86_CR4_UMIP and vm.vcpu.get_sregs().cr4 & cr.X86_CR4_UMIP
    assert mov_to_cr(vcpu, 4, old) == 1
    assert not vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_DESC


# ---------------------------------------------------------------- LMSW, CLTS, CR3

def test_lmsw_sets_low_bits_but_never_clears_pe(prot32) -> None:
    vcpu = prot32.vcpu.vcpu
    rip = vcpu.hw.reg("rip")
    lmsw = CrExitQual(0, CrAccessType.LMSW, lmsw_source=0x0002).encode()
    assert _exit(vcpu, ExitReason.CR_ACCESS, lmsw) == 1
    assert cr.kvm_read_cr0(vcpu) & 0xF == 0x3 and vcpu.hw.reg("rip") == rip + 3      # PE kept, MP set


def test_clts_exit_is_a_kvm_bug_eio(prot32) -> None:
    assert _exit(prot32.vcpu.vcpu, ExitReason.CR_ACCESS, CrExitQual(0, CrAccessType.CLTS).encode()) == -5


def test_mov_from_cr3_and_unknown_cr_register(prot32) -> None:
    vcpu = prot32.vcpu.vcpu
    vcpu.hw.set_cr(3, 0x7000)
    assert mov_from_cr(vcpu, 3, gpr=6) == 1 and vcpu.hw.reg("rsi") == 0x7000
    assert mov_from_cr(vcpu, 0) == 0 and vcpu.run.exit_reason == 0            # vcpu_unimpl


# ---------------------------------------------------------------- CR8 without an in-kernel LAPIC

def test_cr8_reads_back_from_arch_cr8_and_sregs(long64) -> None:
    vcpu = long64.vcpu.vcpu
    assert mov_to_cr(vcpu, 8, 5, gpr=11, reg="r11") == 1
    assert vcpu.arch.cr8 == 5 and not vcpu.arch.exception.pending
    assert mov_from_cr(vcpu, 8, gpr=3) == 1 and vcpu.hw.reg("rbx") == 5
    assert long64.vcpu.get_sregs().cr8 == 5


def test_cr8_reserved_bits_and_u8_truncation(long64) -> None:
    vcpu = long64.vcpu.vcpu
    assert mov_to_cr(vcpu, 8, 0x15) == 1 and gp_queued(vcpu) and vcpu.arch.cr8 == 0
    assert mov_to_cr(vcpu, 8, 0x106) == 1                   # handle_cr passes (u8)val: bit 8 is lost
    assert not vcpu.arch.exception.pending and vcpu.arch.cr8 == 6


def test_lowering_cr8_exits_to_userspace_with_set_tpr(long64) -> None:
    vcpu = long64.vcpu.vcpu
    mov_to_cr(vcpu, 8, 9)
    rip = vcpu.hw.reg("rip")
    assert mov_to_cr(vcpu, 8, 2) == 0
    assert vcpu.run.exit_reason == KvmExit.SET_TPR and vcpu.arch.cr8 == 2
    assert vcpu.hw.reg("rip") == rip + 3                    # the instruction is complete


def test_kvm_run_resyncs_cr8_from_kvm_run(long64) -> None:
    """KVM_RUN applies run->cr8 first (userspace LAPIC); post_kvm_run_save reports it back."""
    vcpu = long64.vcpu.vcpu
    fd = long64.vcpu
    sregs = fd.get_sregs()
    sregs.cr8 = 7
    fd.set_sregs(sregs)
    assert fd.get_sregs().cr8 == 7
    fd.mapping.run.cr8 = 3
    kvm_run(long64)                                          # the guest's HLT
    assert vcpu.arch.cr8 == 3 and fd.mapping.run.cr8 == 3


# ---------------------------------------------------------------- debug registers

def test_dr0_to_dr3_round_trip(long64) -> None:
    vcpu = long64.vcpu.vcpu
    vcpu.hw.set_reg("rax", 0xFFFF_8000_0000_1000)
    assert mov_dr(vcpu, 2, False) == 1 and vcpu.arch.db[2] == 0xFFFF_8000_0000_1000
    assert mov_dr(vcpu, 2, True, gpr=1) == 1 and vcpu.hw.reg("rcx") == 0xFFFF_8000_0000_1000


def test_dr6_dr7_keep_fixed_bits_and_reject_high_bits(long64) -> None:
    vcpu = long64.vcpu.vcpu
    vcpu.hw.set_reg("rax", 0x1)
    assert mov_dr(vcpu, 6, False) == 1 and vcpu.arch.dr6 == 0xFFFF0FF1
    assert mov_dr(vcpu, 7, False) == 1 and vcpu.arch.dr7 == 0x401
    vcpu.hw.set_reg("rax", 1 << 32)
    rip = vcpu.hw.reg("rip")
    assert mov_dr(vcpu, 7, False) == 1 and gp_queued(vcpu) and vcpu.hw.reg("rip") == rip
    assert mov_dr(vcpu, 6, False) == 1 and gp_queued(vcpu) and vcpu.arch.dr6 == 0xFFFF0FF1


def test_dr4_dr5_alias_dr6_dr7_unless_cr4_de(long64) -> None:
    vcpu = long64.vcpu.vcpu
    assert mov_dr(vcpu, 5, True, gpr=2) == 1 and vcpu.hw.reg("rdx") == 0x400
    assert mov_to_cr(vcpu, 4, cr.kvm_read_cr4(vcpu) | cr.X86_CR4_DE) == 1
    rip = vcpu.hw.reg("rip")
    assert mov_dr(vcpu, 4, True) == 1
    exc = vcpu.arch.exception
    assert exc.pending and exc.vector == Vector.UD and vcpu.hw.reg("rip") == rip


def test_lazy_dr_switch_without_guest_debug(long64) -> None:
    """No userspace debugging: handle_dr drops MOV-DR exiting, marks KVM_DEBUGREG_WONT_EXIT and
    re-enters on the same instruction (RIP unchanged, nothing emulated, no exception)."""
    vcpu = long64.vcpu.vcpu
    vcpu.hw.set_reg("rax", 0x1234)
    rip = vcpu.hw.reg("rip")
    assert mov_dr(vcpu, 1, False, debugging=False) == 1
    assert vcpu.hw.reg("rip") == rip and vcpu.arch.db[1] == 0 and not vcpu.arch.exception.pending
    assert not vcpu.hw.vmcs.cpu_based_vm_exec_control & CPU_BASED_MOV_DR_EXITING
    assert vcpu.arch.switch_db_regs & vmx.KVM_DEBUGREG_WONT_EXIT
    vcpu.hw.load_debug_regs([0, 0x55, 0, 0], 0xFFFF0FF0)   # what vcpu_enter_guest loads
    vmx.vmx_sync_dirty_debug_regs(vcpu)
    assert vcpu.arch.db[1] == 0x55 and not vcpu.arch.switch_db_regs
    assert vcpu.hw.vmcs.cpu_based_vm_exec_control & CPU_BASED_MOV_DR_EXITING


def test_dr7_gd_turns_the_access_into_db_with_bd(long64) -> None:
    vcpu = long64.vcpu.vcpu
    vcpu.hw.set_reg("rax", cr.DR7_GD)
    mov_dr(vcpu, 7, False)
    rip = vcpu.hw.reg("rip")
    assert mov_dr(vcpu, 0, True) == 1
    exc = vcpu.arch.exception
    assert exc.pending and exc.vector == Vector.DB and exc.payload == cr.DR6_BD and vcpu.hw.reg("rip") == rip


# ---------------------------------------------------------------- WRMSR(EFER)

def _wrmsr_efer(vcpu, value: int) -> int:
    vcpu.hw.set_reg("rcx", EFER)
    vcpu.hw.set_reg("rax", value & 0xFFFF_FFFF)
    vcpu.hw.set_reg("rdx", value >> 32)
    return _exit(vcpu, ExitReason.MSR_WRITE, 0, 2)


def test_wrmsr_efer_cannot_change_lme_while_paging(long64) -> None:
    vcpu = long64.vcpu.vcpu
    efer = vcpu.hw.efer()
    assert _wrmsr_efer(vcpu, efer & ~cr.EFER_LME) == 1 and gp_queued(vcpu) and vcpu.hw.efer() == efer
    assert _wrmsr_efer(vcpu, efer | 1) == 1 and not vcpu.arch.exception.pending        # SCE is fine
    assert vcpu.hw.efer() & 1


def test_wrmsr_efer_lma_bit_is_the_cpus_and_reserved_bits_are_gp(prot32) -> None:
    vcpu = prot32.vcpu.vcpu
    assert _wrmsr_efer(vcpu, cr.EFER_LMA) == 1 and not vcpu.arch.exception.pending
    assert not vcpu.hw.efer() & cr.EFER_LMA                  # no paging: the written LMA is dropped
    assert _wrmsr_efer(vcpu, 1 << 12) == 1 and gp_queued(vcpu)   # SVME: reserved here
