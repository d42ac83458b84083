"""The exit-table census (`kvmsim exit-coverage`, kvm/exit_coverage.py): no entry is
handle_not_modelled, and every entry is exercised by a scenario whose sim run takes that exit or by
a test that names it.  Also the tests the census points at for exits no scenario can take here."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

from kvmsim.hw.vmcs import ExitReason
from kvmsim.kvm import vmx
from kvmsim.trace.exit_coverage import EXERCISED_BY, exit_coverage
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine

ROOT = Path(__file__).resolve().parent.parent


def test_no_entry_of_the_exit_table_is_handle_not_modelled() -> None:
    """TASK_SWITCH is handled too (handle_task_switch): the set is empty."""
    remaining = {r.name for r in exit_coverage() if not r.modelled}
    assert remaining == set()


def test_every_modelled_entry_is_exercised_by_something() -> None:
    bare = [r.name for r in exit_coverage() if r.modelled and not r.exercised_by]
    assert bare == []
    assert set(EXERCISED_BY) <= {ExitReason(r) for r in vmx.KVM_VMX_EXIT_HANDLERS}


@functools.cache
def _sim_exits(path: str) -> dict[str, int]:
    return dict(run_scenario(load_scenario(ROOT / path), backend="sim").exits)


_SCENARIO_CLAIMS = sorted({(r.name, by) for r in exit_coverage() for by in r.exercised_by
                           if by.startswith("scenarios/")})
_TEST_CLAIMS = sorted({(r.name, by) for r in exit_coverage() for by in r.exercised_by if "::" in by})


@pytest.mark.parametrize("reason,path", _SCENARIO_CLAIMS, ids=[f"{r}-{Path(p).stem}" for r, p in _SCENARIO_CLAIMS])
def test_listed_scenario_takes_the_exit(reason: str, path: str) -> None:
    assert _sim_exits(path).get(reason, 0) >= 1


@pytest.mark.parametrize("reason,ref", _TEST_CLAIMS, ids=[f"{r}-{t.split('::')[1]}" for r, t in _TEST_CLAIMS])
def test_listed_test_exists_and_names_the_exit(reason: str, ref: str) -> None:
    file, func = ref.split("::")
    source = (ROOT / file).read_text()
    funcs = {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)}
    assert func in funcs
    assert reason in source


def test_the_command_prints_every_reason_and_its_handler() -> None:
    out = subprocess.run([sys.executable, "-m", "kvmsim", "exit-coverage"], capture_output=True, text=True,
                         check=True).stdout
    for r in exit_coverage():
        assert any(line.split()[1:3] == [r.name, r.handler] for line in out.splitlines()[1:] if line.strip())


# ---------------------------------------------------------------- exits the census points here for

def test_a_kick_is_an_external_interrupt_exit() -> None:
    """A host interrupt (here the kick another thread sends) is EXTERNAL_INTERRUPT: handled by the
    host, handle_external_interrupt resumes; KVM_RUN then returns -EINTR for the pending signal."""
    m = machine("out %al, $0x80\nhlt")
    try:
        m.vcpu.kick()
        m.vcpu.run()
        assert m.vcpu.vcpu.stat.exits_by_reason["EXTERNAL_INTERRUPT"] == 1
        assert m.vcpu.vcpu.stat.irq_exits == 1
    finally:
        m.close()


def test_rdrand_rdseed_exit_when_the_guest_cpuid_lacks_them() -> None:
    """KVM sets RDRAND/RDSEED exiting when the guest's CPUID lacks them; the exit is #UD."""
    m = machine("rdrand %eax\nrdseed %eax\nout %al, $0x80\nhlt",
                kvm={"cpuid": [{"function": 1, "index": 0, "ecx": 0}, {"function": 7, "index": 0, "ebx": 0}]})
    try:
        run = kvm_run(m)
        stat = m.vcpu.vcpu.stat
        assert stat.exits_by_reason["RDRAND"] == 1
        assert [e["vector"] for e in stat.injected_exceptions][:1] == [6]
        assert KvmExit(run.exit_reason) == KvmExit.SHUTDOWN      # no guest IDT: #UD ends in a triple fault
    finally:
        m.close()
    m = machine("rdseed %eax\nout %al, $0x80\nhlt", kvm={"cpuid": [{"function": 7, "index": 0, "ebx": 0}]})
    try:
        kvm_run(m)
        assert m.vcpu.vcpu.stat.exits_by_reason["RDSEED"] == 1
    finally:
        m.close()


@pytest.mark.parametrize("reason,ret,queued", [
    (ExitReason.TPR_BELOW_THRESHOLD, 1, None),   # no TPR shadow here; KVM re-evaluates events
    (ExitReason.MCE_DURING_VMENTRY, 1, None),    # the host's machine-check handler ran
    (ExitReason.MONITOR_TRAP_FLAG, 1, None),     # MTF is never set here (nested/guest debug)
    (ExitReason.ENCLS, 1, 6),                    # no SGX: #UD
])
def test_handlers_of_exits_this_configuration_never_takes(reason: ExitReason, ret: int, queued: int | None) -> None:
    m = machine("hlt")
    try:
        vcpu = m.vcpu.vcpu
        v = vcpu.hw.vmcs
        v.vm_exit_reason, v.exit_qualification, v.vm_exit_instruction_len = int(reason), 0, 0
        assert vmx.vmx_handle_exit(vcpu, 0) == ret
        exc = vcpu.arch.exception
        assert (exc.vector if exc.pending else None) == queued
    finally:
        m.close()


def test_the_command_with_files_counts_the_exits_each_run_takes() -> None:
    out = subprocess.run([sys.executable, "-m", "kvmsim", "exit-coverage", str(ROOT / "scenarios/rdpmc-gp.yaml")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    at = next(i for i, line in enumerate(out) if line.split()[1:2] == ["RDPMC"])
    assert out[at + 1].split() == ["runs:", "rdpmc-gp", "(2)"]
    io = next(i for i, line in enumerate(out) if line.split()[1:2] == ["IO_INSTRUCTION"])
    assert out[io + 1].split() == ["runs:", "rdpmc-gp", "(1)"]
