"""Shadow paging (kvm: {enable_ept: false}): the #PF intercept, the shadow MMU and what the guest sees.

The scenario guest (guests/shadow_paging.S) is run with a trace recorder; its exits in order, the
kernel path each #PF exit takes, and the same guest with EPT on (where none of those exits exist
but the guest's own results must be the same) are compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.hw.vmcs import Vector, exit_reason_name
from kvmsim.kvm import vmx
from kvmsim.hw import vmcs as V
from kvmsim.kvm.vcpu import Kvm, KvmParams, KvmVcpu
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario
from kvmsim.trace.census import Census
from kvmsim.trace.events import Tap
from kvmsim.trace.recorder import Recorder

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "shadow-paging-mmio.yaml"
PF_EXIT = "EXCEPTION_NMI"


def _run(enable_ept: bool = False):
    sc = load_scenario(SCENARIO)
    if enable_ept:
        sc = sc.model_copy(update={"kvm": sc.kvm.model_copy(update={"enable_ept": True})})
    rec = Recorder()
    res = run_scenario(sc, trace=rec)
    return res, rec.events


@pytest.fixture(scope="module")
def shadow():
    return _run()


def _exit_stream(events) -> list[tuple[str, int, int]]:
    """(reason, exit qualification, intr error code) of every kvm_exit, in order."""
    return [(exit_reason_name(e.fields["exit_reason"]), e.fields["info1"], e.fields["error_code"])
            for e in events if e.kind == "tp" and e.name == "kvm_exit"]


def test_exit_stream_in_order(shadow) -> None:
    """Each #PF exit carries the linear address as its qualification and the CPU's error code."""
    _, events = shadow
    assert _exit_stream(events) == [
        (PF_EXIT, 0xD0000004, 0x0),        # MMIO, SPTE not present
        (PF_EXIT, 0xD000000C, 0x9),        # the MMIO SPTE: P|RSVD
        (PF_EXIT, 0xD0000008, 0xB),        # P|W|RSVD
        ("INVLPG", 0xD0000000, 0),         # drops the MMIO SPTE
        (PF_EXIT, 0xD0000010, 0x0),        # not present again
        (PF_EXIT, 0x8000001234, 0x0),      # the guest's own #PF (PML4[1] absent)
        (PF_EXIT, 0x6008, 0x3),            # MOV to the write-protected PD0
        (PF_EXIT, 0x200100, 0x3),          # the guest's own #PF: R/W clear, CR0.WP
        (PF_EXIT, 0x6008, 0x3),            # MOV to PD0 again
        ("INVLPG", 0x200100, 0),
        (PF_EXIT, 0x7000, 0x3),            # ADD to PD1: unprotect and retry (no second exit)
        ("CR_ACCESS", 0x213, 0),           # MOV RDX <- CR3 (CR3-store exiting without EPT)
        ("CR_ACCESS", 0x203, 0),           # MOV CR3 <- RDX
        (PF_EXIT, 0x8000, 0x3),            # MOV to PD2 (1)
        (PF_EXIT, 0x8000, 0x3),            # (2)
        (PF_EXIT, 0x8000, 0x3),            # (3): write flooding zaps PD2; the 4th MOV is native
        (PF_EXIT, 0xD0000010, 0x9),        # the MMIO SPTE survived the same-CR3 reload
        ("IO_INSTRUCTION", 0xF40043, 0),
    ]


def _paths(events) -> list[str]:
    """The MMU function each kvm_mmu_page_fault reached, in order."""
    out = []
    for e in events:
        if e.kind == "call" and e.name in ("paging_page_fault", "kvm_mmu_unprotect_gfn_and_retry",
                                           "kvm_mmu_track_write") or (e.kind == "tp" and e.name in (
                                           "handle_mmio_page_fault", "kvm_inj_exception")):
            out.append(e.name)
    return out


def test_guest_page_faults_are_reflected_with_cr2_and_error_code(shadow) -> None:
    """The shadow MMU's walk fails: #PF injected with the guest's error code; the guest's handler
    read CR2 = the faulting address (the #PF exit itself left CR2 alone)."""
    res, events = shadow
    assert res.exceptions == [{"vector": Vector.PF, "error_code": 0x0}, {"vector": Vector.PF, "error_code": 0x3}]
    assert (res.regs["r8"], res.regs["r9"]) == (0x0, 0x8000001234)
    assert (res.regs["r10"], res.regs["r11"]) == (0x3, 0x200100)


def test_page_table_writes_are_emulated_retried_and_flooded(shadow) -> None:
    """MOV to a write-tracked table: emulated (PF|ALLOW_RETRY_PF), kvm_mmu_track_write; ADD: unprotect
    and retry; the third unfaulted write to PD2 zaps it.  The guest's PD0 entry holds what it wrote."""
    res, events = shadow
    assert res.emulation["ALLOW_RETRY_PF|PF"] == 6 and res.emulation["PF"] == 5
    calls = [e.name for e in events if e.kind == "call" and e.name in (
        "kvm_mmu_track_write", "kvm_mmu_unprotect_gfn_and_retry", "kvm_mmu_prepare_zap_page")]
    assert calls == ["kvm_mmu_track_write", "kvm_mmu_track_write", "kvm_mmu_unprotect_gfn_and_retry",
                     "kvm_mmu_track_write", "kvm_mmu_track_write", "kvm_mmu_track_write"]
    assert res.memory[0]["bytes"] == "e3002000"    # the MOVs' value, then A|D from the guest's access


def test_same_guest_with_ept_sees_the_same_results() -> None:
    """Differential: with EPT none of these #PF, CR3 or INVLPG exits happen (MMIO is EPT
    violation/misconfig, emulated with PF), and the guest computes the same registers and memory."""
    shadow_res, _ = _run(False)
    ept_res, events = _run(True)
    assert ept_res.exits.get("INVLPG", 0) == 0 and ept_res.exits.get("CR_ACCESS", 0) == 0
    assert ept_res.exits["EPT_VIOLATION"] == 1 and ept_res.exits["EPT_MISCONFIG"] == 4
    assert "ALLOW_RETRY_PF|PF" not in ept_res.emulation
    assert ept_res.regs == shadow_res.regs
    # Accessed/dirty bits included: the walk sets them in the write-protected PD too.
    assert ept_res.memory == shadow_res.memory
    assert [u for u in ept_res.userspace] == [u for u in shadow_res.userspace]


@pytest.mark.parametrize("ept", [False, True])
def test_exception_bitmap_and_controls_follow_enable_ept(ept: bool) -> None:
    """Without EPT: #PF in the exception bitmap, CR3 load/store and INVLPG exiting, no EPT and no
    unrestricted guest, CR0.WP and the TLB-flushing CR4 bits host-owned; with EPT none of that."""
    vcpu = KvmVcpu(Kvm(KvmParams(enable_ept=ept)), 0)
    vmx.vmx_vcpu_create(vcpu)
    v = vcpu.hw.vmcs
    assert (Vector.PF in vcpu.hw.exception_bitmap) is not ept
    for bit in (V.CPU_BASED_CR3_LOAD_EXITING, V.CPU_BASED_CR3_STORE_EXITING, V.CPU_BASED_INVLPG_EXITING):
        assert bool(v.cpu_based_vm_exec_control & bit) is not ept
    assert bool(v.secondary_vm_exec_control & V.SECONDARY_EXEC_ENABLE_EPT) is ept
    assert bool(v.secondary_vm_exec_control & V.SECONDARY_EXEC_UNRESTRICTED_GUEST) is ept
    assert bool(vcpu.arch.cr0_guest_owned_bits & (1 << 16)) is ept          # CR0.WP
    assert bool(vcpu.arch.cr4_guest_owned_bits & (1 << 7)) is ept           # CR4.PGE
    assert vmx.KVM_VMX_EXIT_HANDLERS[int(vmx.ExitReason.INVLPG)] is vmx.handle_invlpg
    vcpu.hw.power_off()


def _both(name: str):
    sc = load_scenario(ROOT / "scenarios" / name)
    ept = run_scenario(sc)
    spt = run_scenario(sc.model_copy(update={"kvm": sc.kvm.model_copy(update={"enable_ept": False})}))
    return ept, spt


# Unpaged prot32 (the nonpaging root), 4-level paging with 1G/2M/4K pages, REP string MMIO, the
# in-kernel ioeventfd, self-modifying code, a mode switch from real to long mode.
SAME_AS_EPT = ["mmio-page-cross-prot32.yaml", "mmio-guest-paging-long64.yaml", "rep-movs-mmio-long64.yaml",
               "ioeventfd-doorbell-long64.yaml", "selfmod-code-long64.yaml", "mode-switch-real-to-long.yaml",
               "emulator-string-prot32.yaml"]


@pytest.mark.parametrize("name", SAME_AS_EPT)
def test_existing_scenarios_without_ept_give_the_guest_and_vmm_the_same_results(name: str) -> None:
    """Differential: what the guest and the VMM observe does not depend on EPT; only the exits do
    (every MMIO access is a #PF exit, no EPT exit remains) and PF-emulations stay PF-emulations."""
    ept, spt = _both(name)
    for what in ("stop", "userspace", "regs", "exceptions", "serial", "memory"):
        assert getattr(spt, what) == getattr(ept, what), what
    assert not spt.exits.get("EPT_VIOLATION") and not spt.exits.get("EPT_MISCONFIG")
    mmio_exits = ept.exits.get("EPT_VIOLATION", 0) + ept.exits.get("EPT_MISCONFIG", 0)
    assert spt.exits.get("EXCEPTION_NMI", 0) >= mmio_exits
    if name.startswith("ioeventfd"):   # the length-0 fast-MMIO match is handle_ept_misconfig's alone
        assert spt.emulation["PF"] == spt.exits["EXCEPTION_NMI"] > ept.emulation["PF"]
    else:
        assert spt.emulation.get("PF", 0) == ept.emulation.get("PF", 0)


def test_cpl3_page_faults_are_intercepted_and_injected() -> None:
    """With EPT the CPU delivers the CPL3 guest's #PFs itself; without it each is a #PF exit that the
    shadow MMU reflects with the same error code (U set), so the guest's handler sees the same."""
    ept, spt = _both("cpl3-user-pages-long64.yaml")
    assert ept.exceptions == [] and ept.regs == spt.regs and ept.userspace == spt.userspace
    assert spt.exceptions == [{"vector": Vector.PF, "error_code": 0x5}, {"vector": Vector.PF, "error_code": 0x7}]
    assert spt.exits["EXCEPTION_NMI"] == 2


@pytest.mark.parametrize("name", ["mmio-avx-fails-long64.yaml", "mmio-cmpxchg16b-fails-long64.yaml"])
def test_emulation_failure_reports_the_page_fault_exit(name: str) -> None:
    """KVM_INTERNAL_ERROR_EMULATION carries the exit's information: the #PF exit (reason 0, the
    linear address, intr info 0x80000b0e) instead of the EPT violation's."""
    ept, spt = _both(name)
    e, s = ept.userspace[-1].fields["data"], spt.userspace[-1].fields["data"]
    assert e[:3] == s[:3]                                 # flags and the instruction bytes
    assert e[3] == 48 and s[3] == 0                       # EPT_VIOLATION, EXCEPTION_NMI
    assert s[4] >> 12 == 0xD0000 and s[6] == 0x80000B0E


def test_census_shows_the_combination_its_path_and_the_retry() -> None:
    """`kvmsim census`: PF|ALLOW_RETRY_PF by its exact combination, reached from handle_exception_nmi,
    and the one unprotect-and-retry (the ADD) as the `retry` outcome."""
    census = Census()
    Tap([census]).run(load_scenario(SCENARIO))
    d = census.to_dict()
    assert d["by_emultype_combination"] == {"ALLOW_RETRY_PF|PF": 6, "PF": 5, "NO_DECODE": 4}
    assert d["outcomes"]["retry"] == 1 and d["outcomes"]["failed"] == 0
    assert d["by_path"]["handle_exception_nmi → kvm_handle_page_fault → kvm_mmu_page_fault → "
                        "x86_emulate_instruction"] == 11


BAD_TABLE = """\
name: table-outside-ram
description: a PML4 entry naming a table with no memslot; the access through it
guest:
  mode: long64
  asm: |
    .include "kvmsim.inc"
    GUEST_ENTRY
    INSTALL_EXCEPTION_HANDLERS
    movabsq $0xd0000003, %rax
    movq    %rax, 0x4008
    movabsq $0x8000000000, %rdi
    EXPECT_FAULT PF_VECTOR, movl (%rdi), %eax
    movl    kvmsim_fault_error, %r8d
    movq    %cr2, %r9
    EXIT 0
kvm: {enable_ept: @EPT@}
devices:
  - {type: debug-exit, port: 0xf4}
  - {type: regbank, gpa: 0xd0000000, values: {0x0: 0}}
"""


def test_a_table_outside_ram_is_a_not_present_fault_on_both(tmp_path: Path) -> None:
    """Guest misbehaviour, no traceback: the shadow walker reads a table outside RAM as not present
    and injects #PF(0) with CR2, which is what the CPU's own walk gives the guest with EPT."""
    results = []
    for ept in ("false", "true"):
        f = tmp_path / f"bad-{ept}.yaml"
        f.write_text(BAD_TABLE.replace("@EPT@", ept))
        results.append(run_scenario(load_scenario(f)))
    spt, ept = results
    assert spt.stop.reason == ept.stop.reason == "debug-exit"
    assert (spt.regs["r8"], spt.regs["r9"]) == (ept.regs["r8"], ept.regs["r9"]) == (0, 0x8000000000)
    assert spt.exceptions == [{"vector": Vector.PF, "error_code": 0}]
