"""Control-register and debug-register access exits in the VMCS: the exit qualifications
(SDM tables 28-3 and 28-4), the CPU's rule for which MOV CR/CLTS/LMSW/MOV DR exit (SDM 26.1.3,
25.3), and the controls and CR0/CR4 ownership KVM programs for a new vCPU (vmx.c)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from kvmsim.hw import vmcs as V
from kvmsim.hw.vmcs import CrAccessType, CrExitQual, DrExitQual, Vmcs
from kvmsim.kvm.kvm_main import SimKvm
from kvmsim.kvm.vcpu import KvmParams
from kvmsim.uapi import KvmCpuidEntry2

# ---------------------------------------------------------------- qualification records

cr_quals = st.builds(CrExitQual, cr=st.integers(0, 15), access=st.sampled_from(list(CrAccessType)),
                     lmsw_mem=st.booleans(), gpr=st.integers(0, 15), lmsw_source=st.integers(0, 0xFFFF))
dr_quals = st.builds(DrExitQual, dr=st.integers(0, 7), from_dr=st.booleans(), gpr=st.integers(0, 15))


@given(cr_quals)
def test_cr_exit_qual_round_trips_and_keeps_reserved_bits_clear(q: CrExitQual) -> None:
    v = q.encode()
    assert CrExitQual.decode(v) == q
    assert v & 0xF == q.cr and (v >> 4) & 3 == q.access and bool(v & 0x40) == q.lmsw_mem
    assert (v >> 8) & 0xF == q.gpr and v >> 16 == q.lmsw_source
    assert v & 0xF080 == 0 and v < 1 << 32        # bits 7 and 15:12 reserved


@given(dr_quals)
def test_dr_exit_qual_round_trips_and_keeps_reserved_bits_clear(q: DrExitQual) -> None:
    v = q.encode()
    assert DrExitQual.decode(v) == q
    assert v & 7 == q.dr and bool(v & 0x10) == q.from_dr and (v >> 8) & 0xF == q.gpr
    assert v & ~0xF17 == 0                        # bits 3, 7:5, 63:12 reserved


def test_qualification_known_values() -> None:
    """Values worked out by hand from the SDM tables (GPR numbering 0 RAX, 1 RCX, 2 RDX, 3 RBX ...)."""
    assert CrExitQual(4, CrAccessType.MOV_TO_CR, gpr=1).encode() == 0x104        # mov %rcx,%cr4
    assert CrExitQual(8, CrAccessType.MOV_FROM_CR, gpr=11).encode() == 0xB18     # mov %cr8,%r11
    assert CrExitQual(0, CrAccessType.CLTS).encode() == 0x20
    assert CrExitQual(0, CrAccessType.LMSW, True, 0, 0xFFF1).encode() == 0xFFF1_0070
    assert DrExitQual(7, True, 2).encode() == 0x217                             # mov %dr7,%rdx
    assert DrExitQual(0, False, 0).encode() == 0
    assert V.GPR_ORDER[:4] == ("rax", "rcx", "rdx", "rbx") and V.GPR_ORDER[15] == "r15"


# ---------------------------------------------------------------- the CPU's exit rule

def _vmcs(cr0_mask: int = 0, cr0_shadow: int = 0, cr4_mask: int = 0, cr4_shadow: int = 0,
          primary: int = 0, secondary: int = 0) -> Vmcs:
    v = Vmcs()
    v.cr0_guest_host_mask, v.cr0_read_shadow = cr0_mask, cr0_shadow
    v.cr4_guest_host_mask, v.cr4_read_shadow = cr4_mask, cr4_shadow
    v.cpu_based_vm_exec_control, v.secondary_vm_exec_control = primary, secondary
    return v


@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))
def test_mov_to_cr0_cr4_exits_iff_a_masked_bit_differs_from_the_shadow(mask: int, shadow: int, value: int) -> None:
    v = _vmcs(mask, shadow, mask, shadow)
    expected = any((value >> b & 1) != (shadow >> b & 1) for b in range(64) if mask >> b & 1)
    assert V.cr_write_exits(v, 0, value) == expected
    assert V.cr_write_exits(v, 4, value) == expected


@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))
def test_mov_from_cr_reads_the_shadow_for_masked_bits_and_never_exits(mask: int, shadow: int, cpu: int) -> None:
    v = _vmcs(mask, shadow, mask, shadow)
    for cr in (0, 4):
        got = V.cr_read_value(v, cr, cpu)
        assert all((got >> b & 1) == ((shadow if mask >> b & 1 else cpu) >> b & 1) for b in range(64))
        assert not V.cr_read_exits(v, cr)


def test_non_exiting_mov_to_cr0_leaves_masked_bits_alone() -> None:
    v = _vmcs(cr0_mask=~0x8 & ((1 << 64) - 1), cr0_shadow=0x11)
    assert not V.cr_write_exits(v, 0, 0x19)                   # only TS (guest-owned) changes
    assert V.cr_write_value(v, 0, 0x31, 0x19) == 0x39        # NE in the CPU survives, TS is taken


def test_cr3_and_cr8_follow_their_load_and_store_controls() -> None:
    none, all_ = _vmcs(), _vmcs(primary=V.CPU_BASED_CR3_LOAD_EXITING | V.CPU_BASED_CR3_STORE_EXITING
                                | V.CPU_BASED_CR8_LOAD_EXITING | V.CPU_BASED_CR8_STORE_EXITING)
    for cr in (3, 8):
        assert not V.cr_write_exits(none, cr, 0) and not V.cr_read_exits(none, cr)
        assert V.cr_write_exits(all_, cr, 0) and V.cr_read_exits(all_, cr)
    only_load = _vmcs(primary=V.CPU_BASED_CR8_LOAD_EXITING)
    assert V.cr_write_exits(only_load, 8, 5) and not V.cr_read_exits(only_load, 8)


def test_clts_exits_only_when_ts_is_host_owned_and_set_in_the_shadow() -> None:
    assert V.clts_exits(_vmcs(cr0_mask=0x8, cr0_shadow=0x8))
    assert not V.clts_exits(_vmcs(cr0_mask=0x8, cr0_shadow=0))
    assert not V.clts_exits(_vmcs(cr0_mask=~0x8 & 0xFFFF_FFFF, cr0_shadow=0x8))


@pytest.mark.parametrize("mask,shadow,source,exits", [
    (0xF, 0x0, 0x1, True),     # sets a host-owned PE the shadow has clear
    (0xF, 0x1, 0x0, False),    # LMSW cannot clear PE: no exit for that
    (0xF, 0x1, 0x1, False),
    (0xF, 0x1, 0x3, True),     # MP differs from the shadow
    (0x1, 0x1, 0xE, False),    # MP/EM/TS guest-owned
    (0x8, 0x0, 0x8, True),     # TS host-owned and differs
    (0x0, 0x0, 0xF, False),
])
def test_lmsw_exit_rule(mask: int, shadow: int, source: int, exits: bool) -> None:
    assert V.lmsw_exits(_vmcs(cr0_mask=mask, cr0_shadow=shadow), source) == exits


def test_lmsw_without_exit_never_clears_pe() -> None:
    v = _vmcs()
    assert V.lmsw_value(v, 0x33, 0x0) == 0x31                # PE kept, MP cleared
    assert V.lmsw_value(v, 0x30, 0xB) == 0x3B


def test_mov_dr_and_single_control_instructions() -> None:
    assert V.dr_access_exits(_vmcs(primary=V.CPU_BASED_MOV_DR_EXITING)) and not V.dr_access_exits(_vmcs())
    v = _vmcs(primary=V.CPU_BASED_HLT_EXITING, secondary=V.SECONDARY_EXEC_DESC)
    assert V.insn_exits(v, "hlt") and V.insn_exits(v, "sgdt") and not V.insn_exits(v, "wbinvd")
    assert V.invpcid_exits(v) is None                         # enable-INVPCID clear: #UD
    assert V.invpcid_exits(_vmcs(secondary=V.SECONDARY_EXEC_ENABLE_INVPCID)) is False
    assert V.invpcid_exits(_vmcs(primary=V.CPU_BASED_INVLPG_EXITING,
                                 secondary=V.SECONDARY_EXEC_ENABLE_INVPCID)) is True


def test_pause_loop_exiting_needs_the_control_cpl0_and_a_loop_longer_than_the_window() -> None:
    v = _vmcs(secondary=V.SECONDARY_EXEC_PAUSE_LOOP_EXITING)
    v.ple_gap, v.ple_window = 128, 4096
    assert V.pause_loop_exits(v, 0, 5000) and not V.pause_loop_exits(v, 0, 4096)
    assert not V.pause_loop_exits(v, 3, 5000) and not V.pause_loop_exits(_vmcs(), 0, 5000)
    assert not V.insn_exits(v, "pause")                          # PAUSE exiting itself is clear


# ---------------------------------------------------------------- what KVM programs for a new vCPU

def _new_vcpu(params: KvmParams | None = None):
    vm = SimKvm().create_vm(params)
    return vm, vm.create_vcpu(0)


def test_new_vcpu_controls_with_ept_unrestricted_guest_and_userspace_lapic() -> None:
    vm, fd = _new_vcpu()
    v = fd.vcpu.hw.vmcs
    p, s = v.cpu_based_vm_exec_control, v.secondary_vm_exec_control
    on = (V.CPU_BASED_HLT_EXITING | V.CPU_BASED_MWAIT_EXITING | V.CPU_BASED_MONITOR_EXITING
          | V.CPU_BASED_RDPMC_EXITING | V.CPU_BASED_CR8_LOAD_EXITING | V.CPU_BASED_CR8_STORE_EXITING
          | V.CPU_BASED_MOV_DR_EXITING | V.CPU_BASED_UNCOND_IO_EXITING | V.CPU_BASED_USE_MSR_BITMAPS
          | V.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS)
    off = (V.CPU_BASED_INVLPG_EXITING | V.CPU_BASED_CR3_LOAD_EXITING | V.CPU_BASED_CR3_STORE_EXITING
           | V.CPU_BASED_RDTSC_EXITING | V.CPU_BASED_TPR_SHADOW | V.CPU_BASED_PAUSE_EXITING
           | V.CPU_BASED_INTR_WINDOW_EXITING | V.CPU_BASED_NMI_WINDOW_EXITING | V.CPU_BASED_USE_IO_BITMAPS)
    assert p & on == on and p & off == 0
    on2 = (V.SECONDARY_EXEC_ENABLE_EPT | V.SECONDARY_EXEC_UNRESTRICTED_GUEST | V.SECONDARY_EXEC_WBINVD_EXITING
           | V.SECONDARY_EXEC_PAUSE_LOOP_EXITING | V.SECONDARY_EXEC_ENABLE_INVPCID)
    off2 = (V.SECONDARY_EXEC_DESC | V.SECONDARY_EXEC_RDRAND_EXITING | V.SECONDARY_EXEC_RDSEED_EXITING
            | V.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES | V.SECONDARY_EXEC_SHADOW_VMCS)
    assert s & on2 == on2 and s & off2 == 0
    assert (v.ple_gap, v.ple_window) == (128, 4096)
    # CR0: the guest owns TS and WP only; CR4: the possible guest bits its CPUID allows.
    assert v.cr0_guest_host_mask == ~0x10008 & ((1 << 64) - 1)
    owned4 = ~v.cr4_guest_host_mask & ((1 << 64) - 1)
    assert owned4 == (1 << 1 | 1 << 2 | 1 << 3 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 16)
    vm.close()


def test_disable_exits_and_no_ept_change_the_controls() -> None:
    vm, fd = _new_vcpu(KvmParams(enable_ept=False, disable_exits=1 | 2 | 4))
    v = fd.vcpu.hw.vmcs
    p = v.cpu_based_vm_exec_control
    assert p & (V.CPU_BASED_INVLPG_EXITING | V.CPU_BASED_CR3_LOAD_EXITING | V.CPU_BASED_CR3_STORE_EXITING)
    assert not p & (V.CPU_BASED_HLT_EXITING | V.CPU_BASED_MWAIT_EXITING | V.CPU_BASED_MONITOR_EXITING)
    assert not v.secondary_vm_exec_control & (V.SECONDARY_EXEC_PAUSE_LOOP_EXITING | V.SECONDARY_EXEC_ENABLE_EPT
                                              | V.SECONDARY_EXEC_UNRESTRICTED_GUEST)
    assert v.cr0_guest_host_mask & (1 << 16)                   # shadow paging intercepts CR0.WP
    vm.close()


def test_set_cpuid_without_rdrand_rdseed_fsgsbase_turns_on_exiting_and_takes_cr4_ownership() -> None:
    vm, fd = _new_vcpu()
    entries = []
    for e in fd.vcpu.arch.cpuid_entries:
        e = KvmCpuidEntry2.from_buffer_copy(e)
        if e.function == 1:
            e.ecx &= ~(1 << 30)                                # RDRAND
        if e.function == 7 and e.index == 0:
            e.ebx &= ~(1 << 18 | 1 << 0)                       # RDSEED, FSGSBASE
        entries.append(e)
    fd.set_cpuid(entries)
    v = fd.vcpu.hw.vmcs
    assert v.secondary_vm_exec_control & V.SECONDARY_EXEC_RDRAND_EXITING
    assert v.secondary_vm_exec_control & V.SECONDARY_EXEC_RDSEED_EXITING
    assert v.cr4_guest_host_mask & (1 << 16)                   # FSGSBASE now reserved: host-owned
    vm.close()
