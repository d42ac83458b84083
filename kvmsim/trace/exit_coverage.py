"""Census of kvm_vmx_exit_handlers (what `kvmsim exit-coverage` prints): for each exit reason of the
table, the handler this model runs, and the scenarios and tests that make that exit happen.

EXERCISED_BY is the declarative part: a scenario file (whose sim run must show the exit) or a test
(`tests/FILE.py::FUNCTION`, whose module must name the reason).  tests/test_exit_coverage.py holds
it to that, and to: no entry is handle_not_modelled.  With scenario FILEs the command also runs
them and counts the exits each one really takes.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmsim.hw.vmcs import ExitReason
from kvmsim.kvm import vmx

_T = "tests/test_remaining_handlers.py::"
_C = "tests/test_exit_coverage.py::"
_VMX_INSN = ("tests/test_vmx_exit_handlers.py::test_vmx_instruction_exits_and_guest_sees_ud",)
_TRAP = ("tests/test_exit_trap.py::test_copied_instruction_exits_on_the_sim",)

# exit reason -> the scenarios / tests that make it happen (first the ones this census checks).
EXERCISED_BY: dict[ExitReason, tuple[str, ...]] = {
    ExitReason.EXCEPTION_NMI:        ("scenarios/vmware-backdoor-long64.yaml", "scenarios/nmi.yaml"),
    ExitReason.EXTERNAL_INTERRUPT:   (_C + "test_a_kick_is_an_external_interrupt_exit",),
    ExitReason.TRIPLE_FAULT:         ("scenarios/triple-fault.yaml",),
    ExitReason.NMI_WINDOW:           ("scenarios/nmi.yaml",),
    ExitReason.IO_INSTRUCTION:       ("scenarios/port-in.yaml",),
    ExitReason.CR_ACCESS:            ("scenarios/cr-access.yaml",),
    ExitReason.DR_ACCESS:            ("scenarios/dr-access.yaml",),
    ExitReason.CPUID:                ("scenarios/cpuid.yaml",),
    ExitReason.MSR_READ:             ("scenarios/msr.yaml",),
    ExitReason.MSR_WRITE:            ("scenarios/msr.yaml",),
    ExitReason.INTERRUPT_WINDOW:     ("scenarios/lapic-irq-window-long64.yaml",),
    ExitReason.HLT:                  ("scenarios/halt.yaml",),
    ExitReason.INVD:                 _TRAP,
    ExitReason.INVLPG:               ("scenarios/shadow-paging-mmio.yaml",
                                      _T + "test_invlpg_exits_only_without_ept_with_the_address_as_qualification"),
    ExitReason.RDPMC:                ("scenarios/rdpmc-gp.yaml",),
    ExitReason.VMCALL:               ("scenarios/hypercall.yaml",),
    **{r: _VMX_INSN for r in (ExitReason.VMCLEAR, ExitReason.VMLAUNCH, ExitReason.VMPTRLD, ExitReason.VMPTRST,
                              ExitReason.VMREAD, ExitReason.VMRESUME, ExitReason.VMWRITE, ExitReason.VMOFF,
                              ExitReason.VMON, ExitReason.INVEPT, ExitReason.INVVPID, ExitReason.VMFUNC)},
    ExitReason.TPR_BELOW_THRESHOLD:  (_C + "test_handlers_of_exits_this_configuration_never_takes",),
    ExitReason.APIC_ACCESS:          ("scenarios/lapic-xapic-long64.yaml",),
    ExitReason.APIC_WRITE:           (_T + "test_handle_apic_write_applies_an_eoi_from_the_virtual_apic_page",),
    ExitReason.EOI_INDUCED:          (_T + "test_handle_apic_eoi_induced_requests_event_evaluation",),
    ExitReason.WBINVD:               _TRAP,
    ExitReason.XSETBV:               ("scenarios/mmio-avx-fails-long64.yaml",),
    ExitReason.TASK_SWITCH:          ("scenarios/task-switch.yaml",),
    ExitReason.MCE_DURING_VMENTRY:   (_C + "test_handlers_of_exits_this_configuration_never_takes",),
    ExitReason.GDTR_IDTR:            ("scenarios/umip-emulation.yaml",),
    ExitReason.LDTR_TR:              ("scenarios/umip-emulation.yaml",),
    ExitReason.EPT_VIOLATION:        ("scenarios/census.yaml",),
    ExitReason.EPT_MISCONFIG:        ("scenarios/census.yaml",),
    ExitReason.PAUSE_INSTRUCTION:    ("scenarios/pause-loop-exiting.yaml",),
    ExitReason.MWAIT_INSTRUCTION:    ("scenarios/monitor-mwait-nop.yaml", _T + "test_monitor_mwait_are_nops_under_the_quirk"),
    ExitReason.MONITOR_TRAP_FLAG:    (_C + "test_handlers_of_exits_this_configuration_never_takes",),
    ExitReason.MONITOR_INSTRUCTION:  ("scenarios/monitor-mwait-nop.yaml", _T + "test_monitor_mwait_are_nops_under_the_quirk"),
    ExitReason.RDRAND:               (_C + "test_rdrand_rdseed_exit_when_the_guest_cpuid_lacks_them",),
    ExitReason.RDSEED:               (_C + "test_rdrand_rdseed_exit_when_the_guest_cpuid_lacks_them",),
    ExitReason.PML_FULL:             ("tests/test_dirty_log.py::test_600_pages_fill_the_pml_buffer_once_and_all_reach_the_bitmap",),
    ExitReason.INVPCID:              (_T + "test_invpcid_without_ept_exits_and_kvm_checks_the_descriptor",),
    ExitReason.PREEMPTION_TIMER:     ("scenarios/lapic-timer-long64.yaml",),
    ExitReason.ENCLS:                (_C + "test_handlers_of_exits_this_configuration_never_takes",),
    ExitReason.BUS_LOCK:             (_T + "test_split_lock_exits_to_userspace_as_bus_lock",),
    ExitReason.NOTIFY:               (_T + "test_handle_notify",),
}


@dataclass(frozen=True)
class ExitCoverage:
    reason: int
    name: str
    handler: str
    modelled: bool
    exercised_by: tuple[str, ...]


def handler_name(fn) -> str:
    """The kernel function's name (a probed handler keeps it in __wrapped__ or __name__)."""
    return getattr(getattr(fn, "__wrapped__", fn), "__name__", repr(fn))


def exit_coverage() -> list[ExitCoverage]:
    rows = []
    for reason, fn in sorted(vmx.KVM_VMX_EXIT_HANDLERS.items()):
        modelled = fn is not vmx.handle_not_modelled
        rows.append(ExitCoverage(int(reason), ExitReason(reason).name,
                                 handler_name(fn) if modelled else "handle_not_modelled",
                                 modelled, EXERCISED_BY.get(ExitReason(reason), ())))
    return rows


def format_exit_coverage(counts: dict[str, dict[str, int]] | None = None) -> str:
    """One line per exit reason; with `counts` (scenario -> exit name -> count) the exits each took."""
    rows = exit_coverage()
    width = max(len(r.name) for r in rows)
    hw = max(len(r.handler) for r in rows)
    lines = [f"kvm_vmx_exit_handlers: {len(rows)} entries, {sum(r.modelled for r in rows)} modelled, "
             f"{sum(bool(r.exercised_by) for r in rows)} exercised by a listed scenario or test"]
    for r in rows:
        by = ", ".join(r.exercised_by) or "-"
        lines.append(f"{r.reason:3d} {r.name:<{width}}  {r.handler:<{hw}}  {by}")
        if counts:
            hits = [f"{sc} ({c[r.name]})" for sc, c in counts.items() if c.get(r.name)]
            if hits:
                lines.append(f"{'':{width + 5}}  {'':{hw}}  runs: " + ", ".join(hits))
    missing = [r.name for r in rows if not r.modelled]
    if missing:
        lines.append("not modelled: " + ", ".join(missing))
    return "\n".join(lines)
