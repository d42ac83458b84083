"""Issue 9 point 1: every instruction that exits under KVM's default VMCS controls exits when it
executes, also when no byte of it was in the loaded image.  Each guest here runs a buffer of NOPs
once, then copies a snippet from .rodata over it at run time, appends a RET and calls the buffer
again (kvm-unit-tests' realmode.c reuses its test_insn slot the same way).  On the sim the exit
reason is read from the model's per-reason counters (RunResult.exits, kvm_vcpu_stat); a control
test calls the same snippet where the loader put it.  On /dev/kvm the same guest must show the
userspace exit (I/O, HLT, MSR with KVM_CAP_X86_USER_SPACE_MSR), or, for exits the kernel handles
itself, the guest outcome the case names (kvm_stop).

Before the execution-time trap (hw/trap.py) the copied cases were lost on the sim; they are the
regression test for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvmsim.scenario.expect import check
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.result import SIM_ONLY, RunResult
from kvmsim.scenario.runner import run_scenario
from tests.simvm import scenario

MODES = ("real16", "prot32", "long64")
UD_EXIT_CODE = 0x100 + 6        # kvmsim.inc: an unhandled #UD EXITs with 0x100 + vector
OK = ("debug-exit", 0)

GUEST = """
        .include "kvmsim.inc"
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
{setup}
        call    buf                     # the slot runs once as NOPs, as realmode.c reuses its slot
        movl    $snip_start, %esi
        movl    $buf, %edi
        COPY_BYTES $snip_end
        movb    $0xc3, (%edi)           # ret
        call    buf                     # the copy runs here
        EXIT    0

        .section .rodata
snip_start:
{snippet}
snip_end:
        .data
        .balign 16
buf:    .fill   63, 1, 0x90
        ret
        .balign 16
area:   .fill   64, 1, 0x5a
"""

# CR4.OSXSAVE before XSETBV (else #UD, which has priority over the exit).
SET_OSXSAVE = """
.if KVMSIM_MODE_LONG64
        movq    %cr4, %rax
        orq     $0x40000, %rax
        movq    %rax, %cr4
.else
        movl    %cr4, %eax
        orl     $0x40000, %eax
        movl    %eax, %cr4
.endif
"""


@dataclass(frozen=True)
class Case:
    """One exiting instruction: its snippet, the VMX exit it must cause, and where it applies."""

    snippet: str
    reason: str
    modes: tuple[str, ...] = MODES
    setup: str = ""
    extra: dict[str, Any] = field(default_factory=dict)        # scenario fields (kvm:, userspace:)
    userspace: dict[str, Any] | None = None                     # the exit /dev/kvm must show too
    stop: tuple[str, int | None] | None = ("debug-exit", 0)    # None: not checked
    kvm_stop: tuple[str, int] | None = None   # exit not seen by userspace: how /dev/kvm's run ends

    @property
    def count(self) -> int:
        """Exits of `reason` in the whole run: the snippet's, plus the EXIT's OUT for I/O."""
        return 2 if self.reason == "IO_INSTRUCTION" else 1


CASES: dict[str, Case] = {
    "out": Case("movb $0x5a, %al\n outb %al, $0x80", "IO_INSTRUCTION",
                userspace={"reason": "IO", "port": 0x80, "direction": 1, "size": 1, "data": "5a"}),
    "in": Case("inb $0x60, %al", "IO_INSTRUCTION",
               userspace={"reason": "IO", "port": 0x60, "direction": 0, "size": 1}),
    "outs": Case("movl $area, %esi\n movw $0x80, %dx\n outsb", "IO_INSTRUCTION",
                 userspace={"reason": "IO", "port": 0x80, "direction": 1, "size": 1, "data": "5a"}),
    "ins": Case("movl $area, %edi\n movw $0x60, %dx\n insb", "IO_INSTRUCTION",
                userspace={"reason": "IO", "port": 0x60, "direction": 0, "size": 1}),
    "hlt": Case("hlt", "HLT", userspace={"reason": "HLT"}, stop=("hlt", None)),
    "cpuid": Case("xorl %eax, %eax\n cpuid", "CPUID", kvm_stop=OK),
    "rdmsr": Case("movl $0x12345678, %ecx\n rdmsr", "MSR_READ",
                  extra={"kvm": {"user_space_msr": ["unknown"]}, "userspace": {"msr": {0x12345678: 7}}},
                  userspace={"reason": "X86_RDMSR", "index": 0x12345678}),
    "wrmsr": Case("movl $0x12345678, %ecx\n movl $7, %eax\n xorl %edx, %edx\n wrmsr", "MSR_WRITE",
                  extra={"kvm": {"user_space_msr": ["unknown"]}, "userspace": {"msr": {0x12345678: 0}}},
                  userspace={"reason": "X86_WRMSR", "index": 0x12345678, "data": 7}),
    "vmcall": Case("movl $12345, %eax\n vmcall", "VMCALL"),
    "invd": Case("invd", "INVD", kvm_stop=OK),
    "wbinvd": Case("wbinvd", "WBINVD", kvm_stop=OK),
    "xsetbv": Case("xorl %ecx, %ecx\n xorl %edx, %edx\n movl $3, %eax\n xsetbv", "XSETBV", setup=SET_OSXSAVE,
                   kvm_stop=OK),
    # No RDPMC handler modelled yet either; KVM (no vPMU counters in CPUID) injects #GP(0).
    "rdpmc": Case("xorl %ecx, %ecx\n rdpmc", "RDPMC", stop=None, kvm_stop=("debug-exit", 0x100 + 13)),
    # The model has no MONITOR/MWAIT handler yet: the exit must happen and reach handle_not_modelled
    # (KVM_EXIT_INTERNAL_ERROR), so only the exit is asserted, not how the run ends.
    "monitor": Case("movl $area, %eax\n xorl %ecx, %ecx\n xorl %edx, %edx\n monitor", "MONITOR_INSTRUCTION",
                    stop=None),
    "mwait": Case("xorl %eax, %eax\n xorl %ecx, %ecx\n mwait", "MWAIT_INSTRUCTION", stop=None),
    "mov_from_cr8": Case("movq %cr8, %rax", "CR_ACCESS", modes=("long64",), kvm_stop=OK),
    "mov_to_cr8": Case("xorl %eax, %eax\n movq %rax, %cr8", "CR_ACCESS", modes=("long64",), kvm_stop=OK),
    "mov_from_dr7": Case(".if KVMSIM_MODE_LONG64\n movq %dr7, %rax\n.else\n movl %dr7, %eax\n.endif",
                         "DR_ACCESS", kvm_stop=OK),
    "mov_to_dr0": Case(".if KVMSIM_MODE_LONG64\n movq %rax, %dr0\n.else\n movl %eax, %dr0\n.endif",
                       "DR_ACCESS", kvm_stop=OK),
}

# VMX instructions outside VMX root: an exit, then #UD for the guest (handle_vmx_instruction).
# In real mode (CR0.PE = 0) the CPU raises #UD before any exit, so 32/64-bit modes only.
VMX_INSNS = {
    "VMCLEAR": "vmclear (%eax)", "VMLAUNCH": "vmlaunch", "VMPTRLD": "vmptrld (%eax)",
    "VMPTRST": "vmptrst (%eax)", "VMRESUME": "vmresume", "VMOFF": "vmxoff", "VMON": "vmxon (%eax)",
    "VMREAD": ".if KVMSIM_MODE_LONG64\n vmread %rax, %rbx\n.else\n vmread %eax, %ebx\n.endif",
    "VMWRITE": ".if KVMSIM_MODE_LONG64\n vmwrite %rax, %rbx\n.else\n vmwrite %eax, %ebx\n.endif",
    "INVEPT": ".if KVMSIM_MODE_LONG64\n invept (%eax), %rbx\n.else\n invept (%eax), %ebx\n.endif",
    "INVVPID": ".if KVMSIM_MODE_LONG64\n invvpid (%eax), %rbx\n.else\n invvpid (%eax), %ebx\n.endif",
    "VMFUNC": "vmfunc",
}
for _name, _insn in VMX_INSNS.items():
    CASES[f"vmx_{_name.lower()}"] = Case(f"movl $area, %eax\n xorl %ebx, %ebx\n {_insn}", _name,
                                         modes=("prot32", "long64"), stop=("debug-exit", UD_EXIT_CODE))

IN_PLACE_GUEST = """
        .include "kvmsim.inc"
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
{setup}
        call    snip_start              # where the loader put it
        EXIT    0
snip_start:
{snippet}
        ret
        .data
        .balign 16
area:   .fill   64, 1, 0x5a
"""


def _sc(case: Case, mode: str, copied: bool = True):
    text = (GUEST if copied else IN_PLACE_GUEST).format(setup=case.setup, snippet=case.snippet)
    devices = [{"type": "serial16550", "port": 0x3F8}, {"type": "debug-exit", "port": 0xF4},
               {"type": "port-value", "port": 0x60, "size": 1, "value": 0x78},
               {"type": "port-value", "port": 0x80, "size": 1, "value": 0}]
    return scenario(text, mode, devices=devices, limits={"wall_seconds": 5}, **case.extra)


def _params(kvm: str = ""):
    out = []
    for name, case in CASES.items():
        for mode in case.modes:
            if kvm == "userspace" and case.userspace is None or kvm == "stop" and case.kvm_stop is None:
                continue
            out.append(pytest.param(name, mode, id=f"{name}-{mode}"))
    return out


def _stopped_as_expected(case: Case, res: RunResult) -> bool:
    if case.stop is None:
        return True
    reason, code = case.stop
    return res.stop.reason == reason and (code is None or res.stop.code == code)


def _has_userspace_exit(case: Case, res: RunResult) -> bool:
    want = dict(case.userspace or {})
    kind = want.pop("reason")
    return any(u.reason == kind and all(u.fields.get(k) == v for k, v in want.items()) for u in res.userspace)


@pytest.mark.parametrize("name,mode", _params())
def test_copied_instruction_exits_on_the_sim(name: str, mode: str) -> None:
    case = CASES[name]
    res = run_scenario(_sc(case, mode))
    assert res.exits.get(case.reason) == case.count, (res.exits, res.stop, res.serial)
    assert _stopped_as_expected(case, res), (res.stop, res.serial)
    if case.userspace is not None:
        assert _has_userspace_exit(case, res), res.userspace


def _in_place_params():
    return [pytest.param(n, m, id=f"{n}-{m}") for n, c in CASES.items() for m in c.modes]


@pytest.mark.parametrize("name,mode", _in_place_params())
def test_the_same_snippet_in_place_exits_on_the_sim(name: str, mode: str) -> None:
    """Control: called where the loader put it, the snippet gives the expected exit, so a failure
    of the copied form above is the copy, not the case."""
    case = CASES[name]
    res = run_scenario(_sc(case, mode, copied=False))
    assert res.exits.get(case.reason) == case.count, (res.exits, res.stop, res.serial)
    assert _stopped_as_expected(case, res), (res.stop, res.serial)


@pytest.mark.kvm
@pytest.mark.parametrize("name,mode", _params(kvm="userspace"))
def test_copied_instruction_exits_to_userspace_on_real_kvm(name: str, mode: str) -> None:
    case = CASES[name]
    res = run_scenario(_sc(case, mode), "kvm", host_events=False)
    assert _has_userspace_exit(case, res), res.userspace
    assert _stopped_as_expected(case, res), (res.stop, res.serial)


@pytest.mark.kvm
@pytest.mark.parametrize("name,mode", _params(kvm="stop"))
def test_copied_instruction_has_the_same_guest_outcome_on_real_kvm(name: str, mode: str) -> None:
    """Exits KVM handles in the kernel: /dev/kvm runs the copied snippet to the outcome the case
    names (kvm_pvm gives KVM_INTERNAL_ERROR_EMULATION for the copied MONITOR/MWAIT and VMX
    instructions, its emulator's answer, and livelocks on VMCALL, so those have no kvm_stop)."""
    case = CASES[name]
    res = run_scenario(_sc(case, mode), "kvm", host_events=False)
    assert (res.stop.reason, res.stop.code) == case.kvm_stop, (res.stop, res.serial)


# ---------------------------------------------------------------- the issue 9 scenarios on /dev/kvm

ROOT = Path(__file__).resolve().parents[1]
TRAP_SCENARIOS = [p for stem in ("selfmod-code", "runtime-copied-io", "undecodable-then-out", "jump-into-instruction")
                  for p in sorted((ROOT / "scenarios").glob(f"{stem}-*.yaml"))]


@pytest.mark.kvm
@pytest.mark.parametrize("path", [p for p in TRAP_SCENARIOS if "kvm" in load_scenario(p).backends],
                         ids=lambda p: p.stem)
def test_trap_scenario_expectations_hold_on_real_kvm(path: Path) -> None:
    """While the sim fails them (known_failure), /dev/kvm shows each expectation is the right one."""
    sc = load_scenario(path)
    res = run_scenario(sc, "kvm", host_events=False)
    bad = [f"{c.name}: {c.diff}" for c in check(sc, res) if not c.passed and c.name not in SIM_ONLY]   # model facts
    assert not bad, "\n".join(bad)
