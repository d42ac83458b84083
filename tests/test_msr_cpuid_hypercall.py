"""RDMSR/WRMSR (in-kernel, #GP, KVM_EXIT_X86_RDMSR/WRMSR, passthrough), CPUID (out-of-range leaves)
and VMCALL (KVM_HC_* results) as a guest and a VMM observe them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kvmsim.kvm.cpuid import DEFAULT_CPUID
from kvmsim.scenario.runner import Machine, run_scenario
from kvmsim.uapi import KvmExit, KvmMsrExitReason
from tests.simvm import kvm_run, machine, scenario, sym

MSR_UNKNOWN = 0x12345678
GP = 13


def set_regs(m: Machine, **values: int) -> None:
    regs = m.vcpu.get_regs()
    for k, v in values.items():
        setattr(regs, k, v)
    m.vcpu.set_regs(regs)


def stat(m: Machine):
    return m.vcpu.vcpu.stat


# ---------------------------------------------------------------- MSRs handled in the kernel

MSR_GUEST = """
        .text
        .globl _start
_start:
rd:     rdmsr
        hlt
wr:     wrmsr
        hlt
"""


@pytest.fixture
def msr_vm():
    m = machine(MSR_GUEST)
    yield m
    m.close()


def rdmsr(m: Machine, index: int) -> Machine:
    set_regs(m, rip=sym(m, "rd"), rcx=index, rax=0xDEAD, rdx=0xBEEF)
    return m


@pytest.mark.parametrize("index,value", [(0x277, 0x0007040600070406), (0x1B, 0xFEE00900), (0xC0000080, 0x500)],
                         ids=["IA32_CR_PAT", "IA32_APICBASE", "EFER"])
def test_rdmsr_of_a_known_msr_returns_edx_eax(msr_vm, index: int, value: int) -> None:
    kvm_run(rdmsr(msr_vm, index), KvmExit.HLT)
    regs = msr_vm.vcpu.get_regs()
    if index == 0xC0000080:   # long64 boot: EFER.LME|LMA; the guest-visible value is the CPU's
        assert regs.rax & 0x500 == 0x500
    else:
        assert (regs.rdx << 32 | regs.rax) == value
    assert stat(msr_vm).exits_by_reason["MSR_READ"] == 1
    assert stat(msr_vm).injected_exceptions == []


def test_wrmsr_then_rdmsr_of_a_known_msr(msr_vm) -> None:
    set_regs(msr_vm, rip=sym(msr_vm, "wr"), rcx=0xC0000081, rax=0x1122_3344, rdx=0x0023_0010)   # MSR_STAR
    kvm_run(msr_vm, KvmExit.HLT)
    kvm_run(rdmsr(msr_vm, 0xC0000081), KvmExit.HLT)
    regs = msr_vm.vcpu.get_regs()
    assert (regs.rdx, regs.rax) == (0x0023_0010, 0x1122_3344)
    assert stat(msr_vm).exits_by_reason["MSR_WRITE"] == 1


@pytest.mark.parametrize("insn,regs", [("rd", {"rcx": MSR_UNKNOWN}),
                                       ("wr", {"rcx": MSR_UNKNOWN, "rax": 0, "rdx": 0}),
                                       ("wr", {"rcx": 0xC0000080, "rax": 0x2, "rdx": 0})],
                         ids=["rdmsr-unknown", "wrmsr-unknown", "wrmsr-efer-reserved-bit"])
def test_msr_access_kvm_refuses_injects_gp0(msr_vm, insn: str, regs: dict) -> None:
    set_regs(msr_vm, rip=sym(msr_vm, insn), **regs)
    msr_vm.vcpu.run()   # no IDT: the #GP escalates, which is not what this test looks at
    assert stat(msr_vm).injected_exceptions[0] == {"vector": GP, "error_code": 0}
    assert stat(msr_vm).exits_by_reason["MSR_READ" if insn == "rd" else "MSR_WRITE"] == 1


# A guest that reads an unknown MSR under TRY and expects #GP; each test adds its REPORTs.
RDMSR_UNKNOWN_EXPECTING_GP = f"""
        .include "kvmsim.inc"
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        movl    ${MSR_UNKNOWN:#x}, %ecx
        EXPECT_FAULT GP_VECTOR, rdmsr
"""


def test_guest_handler_sees_gp_for_unknown_msrs() -> None:
    res = run_scenario(scenario(RDMSR_UNKNOWN_EXPECTING_GP + """\
        REPORT  e, "rdmsr unknown #GP"
        movl    kvmsim_fault_error, %ebx
        EXPECT_FAULT GP_VECTOR, wrmsr
        REPORT  e, "wrmsr unknown #GP"
        REPORT_SUMMARY
"""))
    assert res.stop.reason == "debug-exit" and res.stop.code == 0, res.serial
    assert "SUMMARY: 2 tests, 0 failures" in res.serial
    assert res.regs["rbx"] == 0                      # error code 0
    assert res.exceptions == [{"vector": GP, "error_code": 0}] * 2
    assert not [u for u in res.userspace if u.reason.startswith("X86_")]


# ---------------------------------------------------------------- KVM_CAP_X86_USER_SPACE_MSR

def test_unknown_rdmsr_exits_to_userspace_with_reason_and_index(msr_vm) -> None:
    msr_vm.vm.enable_user_space_msr(KvmMsrExitReason.UNKNOWN)
    run = kvm_run(rdmsr(msr_vm, MSR_UNKNOWN), KvmExit.X86_RDMSR)
    assert run.exit_reason == 29
    assert (run.msr.reason, run.msr.index, run.msr.error) == (2, MSR_UNKNOWN, 0)
    assert msr_vm.vcpu.get_regs().rip == sym(msr_vm, "rd")
    run.msr.data = 0x1_CAFE_F00D
    kvm_run(msr_vm, KvmExit.HLT)
    regs = msr_vm.vcpu.get_regs()
    assert (regs.rdx, regs.rax, regs.rip) == (1, 0xCAFE_F00D, sym(msr_vm, "rd") + 3)
    assert stat(msr_vm).injected_exceptions == []


def test_unknown_wrmsr_exit_carries_edx_eax(msr_vm) -> None:
    msr_vm.vm.enable_user_space_msr(KvmMsrExitReason.UNKNOWN)
    set_regs(msr_vm, rip=sym(msr_vm, "wr"), rcx=MSR_UNKNOWN, rax=0xFFFF_FFFF_8765_4321, rdx=0x1234)
    run = kvm_run(msr_vm, KvmExit.X86_WRMSR)
    assert run.exit_reason == 30
    assert (run.msr.reason, run.msr.index, run.msr.data) == (2, MSR_UNKNOWN, 0x1234_8765_4321)
    kvm_run(msr_vm, KvmExit.HLT)
    assert msr_vm.vcpu.get_regs().rip == sym(msr_vm, "wr") + 3


def test_known_msr_does_not_exit_even_with_user_space_msr(msr_vm) -> None:
    msr_vm.vm.enable_user_space_msr(KvmMsrExitReason.UNKNOWN)
    kvm_run(rdmsr(msr_vm, 0x277), KvmExit.HLT)


def test_userspace_msr_error_becomes_gp_in_the_guest() -> None:
    res = run_scenario(scenario(RDMSR_UNKNOWN_EXPECTING_GP + """\
        REPORT  e, "msr.error = 1 is #GP"
        REPORT_SUMMARY
""", kvm={"user_space_msr": ["unknown"]}))
    assert res.stop.reason == "debug-exit" and res.stop.code == 0, res.serial
    rd = [u for u in res.userspace if u.reason == "X86_RDMSR"]
    assert [(u.fields["index"], u.fields["reason"], u.fields["error"]) for u in rd] == [(MSR_UNKNOWN, 2, 1)]
    assert res.exceptions == [{"vector": GP, "error_code": 0}]


# ---------------------------------------------------------------- MSR bitmap passthrough

PASSTHROUGH = [(0xC0000100, "FS_BASE"), (0xC0000101, "GS_BASE"), (0xC0000102, "KERNEL_GS_BASE"),
               (0x174, "SYSENTER_CS"), (0x175, "SYSENTER_ESP"), (0x176, "SYSENTER_EIP")]


@pytest.mark.parametrize("index,name", PASSTHROUGH, ids=[n for _, n in PASSTHROUGH])
def test_passthrough_msr_causes_no_msr_exit(msr_vm, index: int, name: str) -> None:
    set_regs(msr_vm, rip=sym(msr_vm, "wr"), rcx=index, rax=0x5000, rdx=0)
    kvm_run(msr_vm, KvmExit.HLT)
    kvm_run(rdmsr(msr_vm, index), KvmExit.HLT)
    regs = msr_vm.vcpu.get_regs()
    assert (regs.rdx, regs.rax) == (0, 0x5000)
    by_reason = stat(msr_vm).exits_by_reason
    assert by_reason["MSR_READ"] == by_reason["MSR_WRITE"] == 0
    assert by_reason["HLT"] == 2


def test_wrmsr_fs_base_is_the_fs_base_userspace_sees(msr_vm) -> None:
    set_regs(msr_vm, rip=sym(msr_vm, "wr"), rcx=0xC0000100, rax=0x7000, rdx=0)
    kvm_run(msr_vm, KvmExit.HLT)
    assert msr_vm.vcpu.get_sregs().fs.base == 0x7000


# ---------------------------------------------------------------- CPUID

CPUID_GUEST = """
        .text
        .globl _start
_start:
        cpuid
        hlt
"""
_DEFAULT = {(f, i): (a, b, c, d) for f, i, _, a, b, c, d in DEFAULT_CPUID}
MAX_BASIC = _DEFAULT[(0, 0)][0]


def cpuid(m: Machine, leaf: int, index: int = 0) -> tuple[int, int, int, int]:
    set_regs(m, rip=m.image.entry, rax=leaf, rcx=index, rbx=0x5A5A, rdx=0x5A5A)
    kvm_run(m, KvmExit.HLT)
    r = m.vcpu.get_regs()
    return r.rax, r.rbx, r.rcx, r.rdx


@pytest.fixture(scope="module")
def cpuid_vm():
    m = machine(CPUID_GUEST)
    yield m
    m.close()


@dataclass(frozen=True)
class CpuidCase:
    descr: str
    leaf: int
    index: int
    want: tuple[int, int] | None      # (leaf, index) whose entry is returned; None: all zero


C = CpuidCase
CPUID_CASES = [
    C("leaf 0 max basic + GenuineIntel", 0, 0, (0, 0)),
    C("in range leaf 1", 1, 0, (1, 0)),
    C("basic above max -> max basic", 0x20, 0, (MAX_BASIC, 0)),
    C("basic above max keeps the index", 0x20, 1, (MAX_BASIC, 1)),
    C("0x50000000 range is basic", 0x5000_0000, 0, (MAX_BASIC, 0)),
    C("in range but no entry -> zeros", 0x2, 0, None),
    C("extended above max -> max basic", 0x8000_0009, 0, (MAX_BASIC, 0)),
    C("extended in range, no entry -> zeros", 0x8000_0002, 0, None),
    C("hypervisor KVM leaf", 0x4000_0001, 0, (0x4000_0001, 0)),
    C("hypervisor above its sub-class max -> max basic", 0x4000_0005, 0, (MAX_BASIC, 0)),
    C("hypervisor sub-class that does not exist -> max basic", 0x4000_0100, 0, (MAX_BASIC, 0)),
    C("centaur class absent -> max basic", 0xC000_0001, 0, (MAX_BASIC, 0)),
]


@pytest.mark.parametrize("case", CPUID_CASES, ids=lambda c: c.descr)
def test_cpuid_leaf(cpuid_vm, case: CpuidCase) -> None:
    want = _DEFAULT[case.want] if case.want else (0, 0, 0, 0)
    assert cpuid(cpuid_vm, case.leaf, case.index) == want


def test_cpuid_out_of_range_is_zero_for_an_amd_vendor() -> None:
    """get_out_of_range_cpuid_entry returns NULL for AuthenticAMD/HygonGenuine (as /dev/kvm on AMD)."""
    m = machine(CPUID_GUEST)
    try:
        entries = m.vm.kvm.vcpus[0].arch.cpuid_entries
        leaf0 = next(e for e in entries if e.function == 0)
        leaf0.ebx, leaf0.edx, leaf0.ecx = (int.from_bytes(s, "little") for s in (b"Auth", b"enti", b"cAMD"))
        m.vcpu.set_cpuid(entries)
        assert cpuid(m, 0x20) == (0, 0, 0, 0)
        assert cpuid(m, 0x8000_0009) == (0, 0, 0, 0)
        assert cpuid(m, MAX_BASIC) == _DEFAULT[(MAX_BASIC, 0)]
    finally:
        m.close()


def test_cpuid_vendor_string_and_rip_skip(cpuid_vm) -> None:
    _, b, c, d = cpuid(cpuid_vm, 0)
    assert b"".join(x.to_bytes(4, "little") for x in (b, d, c)) == b"GenuineIntel"
    assert cpuid_vm.vcpu.get_regs().rip == cpuid_vm.image.entry + 3    # cpuid (2) + hlt (1)


# ---------------------------------------------------------------- VMCALL

HC_GUEST = """
        .text
        .globl _start
_start:
        vmcall
        hlt
"""


@pytest.mark.parametrize("mode,nr,ret", [
    ("long64", 0x1234, 0xFFFF_FFFF_FFFF_FC18),      # -KVM_ENOSYS
    ("long64", 11, 0),                              # KVM_HC_SCHED_YIELD, no such APIC ID
    ("long64", 12, 0xFFFF_FFFF_FFFF_FC18),          # KVM_HC_MAP_GPA_RANGE without the exit enabled
    ("prot32", 0x1234, 0xFFFF_FC18),                # not 64-bit mode: truncated to 32 bits
    ("prot32", 11, 0),
    ("real16", 0x1234, 0xFFFF_FC18),
], ids=["long64-unknown", "long64-sched-yield", "long64-map-gpa-range", "prot32-unknown",
        "prot32-sched-yield", "real16-unknown"])
def test_hypercall_result_in_rax(mode: str, nr: int, ret: int) -> None:
    m = machine(HC_GUEST, mode)
    try:
        set_regs(m, rax=nr, rbx=0xFFFF)
        kvm_run(m, KvmExit.HLT)                      # no userspace exit for the VMCALL
        regs = m.vcpu.get_regs()
        assert regs.rax == ret
        assert regs.rip == m.image.entry + 3 + 1     # vmcall (3) skipped, then hlt
        assert stat(m).exits_by_reason["VMCALL"] == 1 and stat(m).hypercalls == 1
    finally:
        m.close()
