"""What __kvm_set_msr / kvm_get_msr_common decide before and besides the MSR table: canonical
address MSRs, TSC_AUX's reserved half and CPUID gate, the speculation-control MSRs (SPEC_CTRL,
PRED_CMD, FLUSH_CMD, ARCH_CAPABILITIES) by the guest's CPUID, the legacy PMU MSRs without a vPMU,
and the syscall MSRs KVM loads into the CPU (kvm-unit-tests msr.flat checks these)."""

from __future__ import annotations

import pytest

from kvmsim.kvm.cpuid import DEFAULT_CPUID
from kvmsim.scenario.runner import run_scenario
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine, scenario, sym
from tests.test_msr_cpuid_hypercall import MSR_GUEST, set_regs, stat

GP = 13
NONCANONICAL = 0xAAAA_AAAA_AAAA_AAAA


@pytest.fixture
def msr_vm():
    m = machine(MSR_GUEST)
    yield m
    m.close()


def wrmsr(m, index: int, value: int) -> list:
    """WRMSR from the guest; the exceptions KVM injected for it."""
    set_regs(m, rip=sym(m, "wr"), rcx=index, rax=value & 0xFFFF_FFFF, rdx=value >> 32)
    m.vcpu.run()
    return stat(m).injected_exceptions


def rdmsr(m, index: int) -> tuple[int | None, list]:
    set_regs(m, rip=sym(m, "rd"), rcx=index, rax=0xDEAD, rdx=0xBEEF)
    m.vcpu.run()
    regs = m.vcpu.get_regs()
    injected = stat(m).injected_exceptions
    return (None if injected else regs.rdx << 32 | regs.rax), injected


WRITES = [  # (MSR, value, #GP expected, why)
    (0xC0000082, NONCANONICAL, True, "LSTAR non-canonical"),
    (0xC0000083, NONCANONICAL, True, "CSTAR non-canonical"),
    (0xC0000082, 0xFFFF_8000_0000_1000, False, "LSTAR canonical kernel half"),
    (0xC0000103, 1 << 32, True, "TSC_AUX bits 63:32 reserved (Intel)"),
    (0xC0000103, 0xFFFF_FFFF, False, "TSC_AUX low half"),
    (0x48, 0x1, False, "SPEC_CTRL IBRS"),
    (0x48, 0x7, False, "SPEC_CTRL IBRS|STIBP|SSBD"),
    (0x48, 0x8, True, "SPEC_CTRL reserved bit 3"),
    (0x49, 0x1, False, "PRED_CMD IBPB"),
    (0x49, 0x80, True, "PRED_CMD SBPB (AMD only)"),
    (0x10B, 0x1, True, "FLUSH_CMD without FLUSH_L1D in CPUID"),
    (0x10A, 0x0, True, "ARCH_CAPABILITIES is read-only to the guest"),
    (0xC0010000, 0x1234, False, "K7_EVNTSEL0 ignored without a vPMU"),
    (0x186, 0x5, False, "P6_EVNTSEL0 ignored without a vPMU"),
]


@pytest.mark.parametrize("index,value,gp,why", WRITES, ids=[w[3] for w in WRITES])
def test_wrmsr_checks(msr_vm, index: int, value: int, gp: bool, why: str) -> None:
    injected = wrmsr(msr_vm, index, value)
    assert injected == ([{"vector": GP, "error_code": 0}] if gp else []), why
    assert stat(msr_vm).exits_by_reason["MSR_WRITE"] == 1


READS = [  # (MSR, value or None for #GP, why)
    (0x49, None, "PRED_CMD is write-only"),
    (0x10B, None, "FLUSH_CMD is write-only"),
    (0x48, 0, "SPEC_CTRL resets to 0"),
    (0x10A, 0x48, "ARCH_CAPABILITIES: PSCHANGE_MC_NO | SKIP_VMENTRY_L1DFLUSH"),
    (0xC0010004, 0, "K7_PERFCTR0 reads 0 without a vPMU"),
]


@pytest.mark.parametrize("index,value,why", READS, ids=[r[2] for r in READS])
def test_rdmsr_checks(msr_vm, index: int, value: int | None, why: str) -> None:
    got, injected = rdmsr(msr_vm, index)
    assert got == value, why
    assert injected == ([] if value is not None else [{"vector": GP, "error_code": 0}])


def test_spec_ctrl_keeps_what_was_written(msr_vm) -> None:
    assert wrmsr(msr_vm, 0x48, 0x5) == []
    assert rdmsr(msr_vm, 0x48) == (0x5, [])


def _without(leaf: int, reg: str, bit: int) -> list[dict[str, int]]:
    """A kvm.cpuid override clearing one CPUID bit of the default table."""
    for f, i, _, a, b, c, d in DEFAULT_CPUID:
        if (f, i) == (leaf, 0):
            regs = dict(zip(("eax", "ebx", "ecx", "edx"), (a, b, c, d)))
            return [{"function": leaf, "index": 0, reg: regs[reg] & ~(1 << bit)}]
    raise KeyError(leaf)


@pytest.mark.parametrize("index,leaf,reg,bit", [(0x48, 7, "edx", 26), (0xC0000103, 0x80000001, "edx", 27)],
                         ids=["SPEC_CTRL without X86_FEATURE_SPEC_CTRL", "TSC_AUX without RDTSCP"])
def test_msr_absent_without_its_cpuid_feature(index: int, leaf: int, reg: str, bit: int) -> None:
    m = machine(MSR_GUEST, kvm={"cpuid": _without(leaf, reg, bit)})
    try:
        assert rdmsr(m, index) == (None, [{"vector": GP, "error_code": 0}])
    finally:
        m.close()


SYSCALL_MSRS = [(0xC0000081, 0x0023_0010_0000_0000), (0xC0000082, 0xFFFF_8000_1234_5000),
                (0xC0000083, 0x4000), (0xC0000084, 0x4700), (0xC0000103, 0x2A)]


@pytest.mark.parametrize("index,value", SYSCALL_MSRS, ids=["STAR", "LSTAR", "CSTAR", "FMASK", "TSC_AUX"])
def test_user_return_msrs_reach_the_cpu(msr_vm, index: int, value: int) -> None:
    """vmx_uret_msrs: the value KVM accepted is the one SYSCALL/RDTSCP use on the CPU."""
    assert wrmsr(msr_vm, index, value) == []
    assert msr_vm.vcpu.vcpu.hw.msr(index) == value
    assert rdmsr(msr_vm, index) == (value, [])


RDTSCP_GUEST = """
        .include "kvmsim.inc"
        GUEST_ENTRY
        movl    $0xc0000103, %ecx           # MSR_TSC_AUX
        movl    $0x1234, %eax
        xorl    %edx, %edx
        wrmsr
        movq    $-1, %rcx
        rdtsc
        movq    %rax, %rsi
        rdtscp
        movq    %rax, %rdi
        movq    %rdx, %rbx
        hlt
"""


def test_rdtscp_reads_tsc_aux_and_the_virtual_tsc() -> None:
    """RDTSCP: ECX = TSC_AUX (zero-extended), EDX:EAX the same virtual TSC RDTSC reads, a few
    retired instructions later (the TSC counts retired instructions here)."""
    m = machine(RDTSCP_GUEST)
    try:
        kvm_run(m, KvmExit.HLT)
        r = m.vcpu.get_regs()
    finally:
        m.close()
    assert r.rcx == 0x1234
    assert 0 < (r.rbx << 32 | r.rdi) - r.rsi < 100
