"""kvm_vmx_exit_handlers (reference §1.2) and the exits __vmx_handle_exit answers without a handler
(§1.4 step 5, §1.5): table coverage against the document, unexpected reasons, failed VM entry,
triple fault, and VMX instructions turning into #UD for the guest."""

from __future__ import annotations

import pytest

from kvmsim.hw.vmcs import VMX_EXIT_REASONS_FAILED_VMENTRY, ExitReason
from kvmsim.kvm.kvm_main import SimKvm
from kvmsim.kvm.vmx import KVM_VMX_EXIT_HANDLERS, kvm_vmx_max_exit_handlers, vmx_handle_exit
from kvmsim.scenario.runner import run_scenario
from kvmsim.uapi import KvmExit, KvmInternalError
from tests.simvm import scenario
from tests.test_uapi import vmx_exit_reason_table


def _reference_rows() -> list[tuple[int, str, str]]:
    return [(n, name, handler) for n, (name, handler) in sorted(vmx_exit_reason_table().items())]


def _has_handler(cell: str) -> bool:
    return cell.startswith("`")


def _no_handler(cell: str) -> bool:
    return cell.startswith("—")


# ---------------------------------------------------------------- the table against the document

def test_every_reference_handler_has_a_table_entry() -> None:
    rows = _reference_rows()
    wanted = {n: name for n, name, h in rows if _has_handler(h)}
    assert len(wanted) >= 50
    missing = {name for n, name in wanted.items() if n not in KVM_VMX_EXIT_HANDLERS}
    assert not missing


def test_reasons_without_a_reference_handler_have_no_entry() -> None:
    rows = _reference_rows()
    dashed = {n: name for n, name, h in rows if _no_handler(h)}
    assert {"RDTSC", "XSAVES", "INVALID_STATE", "INIT_SIGNAL"} <= set(dashed.values())
    extra = {name for n, name in dashed.items() if n in KVM_VMX_EXIT_HANDLERS}
    assert not extra


def test_table_has_no_reason_the_reference_does_not_list() -> None:
    listed = {n for n, _, _ in _reference_rows()}
    assert set(KVM_VMX_EXIT_HANDLERS) <= listed


def test_kvm_vmx_max_exit_handlers_is_largest_index_plus_one() -> None:
    """Reference §1.2: ARRAY_SIZE(kvm_vmx_exit_handlers) is 76 in v6.8 (NOTIFY = 75 is last)."""
    assert kvm_vmx_max_exit_handlers == 76


# ---------------------------------------------------------------- synthesized exits

@pytest.fixture
def vcpu():
    vm = SimKvm().create_vm()
    fd = vm.create_vcpu(0)
    yield fd.vcpu
    vm.close()


UNEXPECTED = [ExitReason.INIT_SIGNAL, ExitReason.RDTSC, ExitReason.MSR_LOAD_FAIL, ExitReason.RDTSCP,
              ExitReason.XSAVES, ExitReason.XRSTORS, ExitReason.UMWAIT, ExitReason.TPAUSE,
              ExitReason.MSR_READ_IMM, 0x7FFF]


@pytest.mark.parametrize("reason", UNEXPECTED, ids=lambda r: getattr(r, "name", hex(r)))
def test_reason_without_entry_is_internal_error_unexpected_exit_reason(vcpu, reason: int) -> None:
    vcpu.hw.vmcs.vm_exit_reason = int(reason)
    vcpu.arch.complete_userspace_io = None
    assert vmx_handle_exit(vcpu, 0) == 0
    run = vcpu.run
    assert run.exit_reason == KvmExit.INTERNAL_ERROR
    assert run.internal.suberror == KvmInternalError.UNEXPECTED_EXIT_REASON == 4
    assert run.internal.ndata == 2
    assert list(run.internal.data[:2]) == [int(reason), 0]   # exit_reason.full, last_vmentry_cpu


def test_failed_vmentry_is_fail_entry_with_the_full_reason(vcpu) -> None:
    full = VMX_EXIT_REASONS_FAILED_VMENTRY | ExitReason.INVALID_STATE
    vcpu.hw.vmcs.vm_exit_reason = full
    assert vmx_handle_exit(vcpu, 0) == 0
    run = vcpu.run
    assert run.exit_reason == KvmExit.FAIL_ENTRY
    assert (run.fail_entry.hardware_entry_failure_reason, run.fail_entry.cpu) == (full, 0)


def test_failed_vmentry_wins_over_a_reason_that_has_a_handler(vcpu) -> None:
    """§1.4: step 5 comes before the table, so even an HLT reason with bit 31 is FAIL_ENTRY."""
    vcpu.hw.vmcs.vm_exit_reason = VMX_EXIT_REASONS_FAILED_VMENTRY | ExitReason.HLT
    assert vmx_handle_exit(vcpu, 0) == 0
    assert vcpu.run.exit_reason == KvmExit.FAIL_ENTRY


def test_handle_triple_fault_is_shutdown_and_clears_mmio_needed(vcpu) -> None:
    vcpu.hw.vmcs.vm_exit_reason = ExitReason.TRIPLE_FAULT
    vcpu.mmio_needed = True
    assert vmx_handle_exit(vcpu, 0) == 0
    assert vcpu.run.exit_reason == KvmExit.SHUTDOWN
    assert vcpu.mmio_needed is False


def test_guest_triple_fault_ends_in_kvm_exit_shutdown() -> None:
    """No IDT at all: #UD → #DF → triple fault, seen by userspace as KVM_EXIT_SHUTDOWN."""
    sc = scenario("""
        .text
        .globl _start
_start:
        lidt    idtr
        ud2
        .data
idtr:   .word 0
        .quad 0
""")
    res = run_scenario(sc)
    assert res.stop.reason == "shutdown"
    assert [u.reason for u in res.userspace] == ["SHUTDOWN"]
    assert res.exits.get("TRIPLE_FAULT") == 1


# ---------------------------------------------------------------- VMX instructions → #UD

VMX_INSNS = [
    ("VMCLEAR", "vmclear (%rax)"),
    ("VMLAUNCH", "vmlaunch"),
    ("VMPTRLD", "vmptrld (%rax)"),
    ("VMPTRST", "vmptrst (%rax)"),
    ("VMREAD", "vmread %rax, %rbx"),
    ("VMRESUME", "vmresume"),
    ("VMWRITE", "vmwrite %rax, %rbx"),
    ("VMOFF", "vmxoff"),
    ("VMON", "vmxon (%rax)"),
    ("INVEPT", "invept (%rax), %rbx"),
    ("INVVPID", "invvpid (%rax), %rbx"),
    ("VMFUNC", "vmfunc"),
]


@pytest.mark.parametrize("reason,insn", VMX_INSNS, ids=[r for r, _ in VMX_INSNS])
def test_vmx_instruction_exits_and_guest_sees_ud(reason: str, insn: str) -> None:
    sc = scenario(f"""
        .include "kvmsim.inc"
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        movl    $region, %eax
        xorl    %ebx, %ebx
        EXPECT_FAULT UD_VECTOR, {insn}
        REPORT  e, "{reason} raises #UD"
        REPORT_SUMMARY
        .data
        .balign 4096
region: .fill 4096, 1, 0
""")
    res = run_scenario(sc)
    assert res.stop.reason == "debug-exit" and res.stop.code == 0, res.serial
    assert f"PASS: {reason} raises #UD" in res.serial
    assert res.exits.get(reason) == 1
    assert res.exceptions == [{"vector": 6, "error_code": None}]
