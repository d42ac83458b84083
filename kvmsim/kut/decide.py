"""Which unittests.cfg entries run on kvmsim, and why the others are SKIP.

The first checks are scripts/runtime.bash `run()`'s own, in its order and with its wording
(nodefault, arch, accel, disabled_if, check, a missing file); the ones after are kvmsim's:
more than one vCPU, and what the model does not have (NOT_MODELLED, one line each).  A `check =`
line is answered from kvmsim's modelled host (its kvm module parameters as the run sets them),
not from the machine kvmsim runs on: the host those tests ask about is the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kvmsim.kut.cfg import UnitTest

ACCEL = "kvm"   # kvmsim models KVM: run_tests.sh's ACCEL

# Modelled kvm / kvm_intel module parameters a `check =` line may read: sysfs file -> Kvm field.
# Their values come from the scenario schema's defaults, and --kvm-param NAME=Y|N sets them.
KVM_PARAM_FILES: dict[str, str] = {
    "/sys/module/kvm/parameters/force_emulation_prefix": "force_emulation_prefix",
    "/sys/module/kvm/parameters/enable_vmware_backdoor": "enable_vmware_backdoor",
    "/sys/module/kvm_intel/parameters/ept": "enable_ept",
    "/sys/module/kvm_intel/parameters/unrestricted_guest": "unrestricted_guest",
    "/sys/module/kvm_intel/parameters/emulate_invalid_guest_state": "emulate_invalid_guest_state",
}

# Host facts a `check =` line may read that the model fixes (value, why that value).
FIXED_HOST_FILES: dict[str, tuple[str, str]] = {
    "/sys/module/kvm/parameters/enable_pmu": ("N", "kvmsim models no PMU"),
    "/sys/module/kvm/parameters/ignore_msrs": ("N", "unknown MSRs #GP, as kvm's default"),
    "/sys/module/kvm_intel/parameters/allow_smaller_maxphyaddr": ("N", "kvm_intel's default; not modelled"),
    "/proc/sys/kernel/nmi_watchdog": ("0", "the modelled host sends NMIs only where a scenario asks"),
}


def _cpu_has(t: UnitTest, feature: str) -> bool:
    return bool(t.cpu) and f"+{feature}" in t.cpu.split(",")


def _devices(t: UnitTest) -> list[str]:
    argv = t.qemu_argv
    return [argv[i + 1].split(",")[0] for i, a in enumerate(argv[:-1]) if a == "-device"]


# What the model cannot do: (predicate on the test, the one-line reason for its SKIP), first match wins.
# Only where a run would mislead: a feature the model's CPUID does not advertise (LA57, LAM, CET, PKU ...)
# is the test's own to SKIP, so those run.
NOT_MODELLED: list[tuple[Callable[[UnitTest], bool], str]] = [
    (lambda t: t.file in ("vmx.flat",) or _cpu_has(t, "vmx"),
     "nested VMX: kvmsim models no nested virtualization (its CPUID has no VMX)"),
    (lambda t: t.file in ("svm.flat", "svm_npt.flat") or _cpu_has(t, "svm"),
     "nested SVM: kvmsim models Intel VMX, not AMD SVM"),
    (lambda t: t.file.startswith("hyperv_") or "hv_passthrough" in (t.cpu or ""),
     "Hyper-V enlightenments (hv_*, hyperv-testdev) are not modelled"),
    (lambda t: t.file.startswith("pmu"), "kvmsim models no PMU (performance counters, LBR, PEBS)"),
    (lambda t: t.file == "intel-iommu.flat", "no q35 machine, PCI, VT-d or edu device in the model"),
    (lambda t: t.file == "asyncpf.flat", "async page faults need a host that swaps guest memory"),
    (lambda t: t.file == "kvmclock_test.flat", "kvmclock (MSR_KVM_SYSTEM_TIME) is not modelled"),
    (lambda t: t.file == "s3.flat", "ACPI S3 suspend needs firmware (RTC wake-up, FACS) the model lacks"),
    (lambda t: any(d not in ("pc-testdev", "isa-debug-exit") for d in _devices(t)),
     "a QEMU device the model lacks (-device)"),
]


@dataclass
class Settings:
    """What a `kvmsim kut` run was asked for: the tree's arch, the modelled kvm params, the selection."""

    arch: str = "x86_64"
    kvm_params: dict[str, bool] = field(default_factory=dict)      # Kvm field -> value, over the defaults
    only_group: str | None = None
    run_nodefault: bool = False     # run_tests.sh -a: nodefault tests too
    smp1: bool = False              # run smp > 1 tests on one vCPU (the "with smp = 1")
    flat_dir: Path | None = None    # where <file> is looked for


@dataclass(frozen=True)
class Decision:
    run: bool
    reason: str = ""                # why not (SKIP), or a note on how it runs


def kvm_param_defaults() -> dict[str, bool]:
    """The Kvm model's defaults for the parameters KVM_PARAM_FILES names."""
    # per command, not at the top: the schema (pydantic) loads only when a run decides
    from kvmsim.scenario.schema import Kvm
    k = Kvm()
    return {f: getattr(k, f) for f in KVM_PARAM_FILES.values()}


def check_value(path: str, s: Settings) -> tuple[str | None, str]:
    """What the modelled host has in a `check =` file: (value or None if unknown, why)."""
    if path in KVM_PARAM_FILES:
        name = KVM_PARAM_FILES[path]
        val = s.kvm_params.get(name, kvm_param_defaults()[name])
        return ("Y" if val else "N"), f"kvm.{name}"
    if path in FIXED_HOST_FILES:
        return FIXED_HOST_FILES[path]
    return None, "not modelled by kvmsim"


def decide(t: UnitTest, s: Settings) -> Decision:
    """run_tests.sh's run() checks, then kvmsim's; the first that says no is the SKIP reason."""
    if "nodefault" in t.groups and not s.run_nodefault and s.only_group is None:
        return Decision(False, "test marked as manual run only")
    if t.arch and t.arch != s.arch:
        return Decision(False, f"{t.arch} only")
    if t.accel and not re.match(rf"^{re.escape(t.accel)}(,|$)", ACCEL):
        return Decision(False, f"{t.accel} only, but ACCEL={ACCEL}")
    if t.disabled_if:
        return Decision(False, f"disabled_if is a shell condition kvmsim does not evaluate: {t.disabled_if}")
    for path, want in t.check:
        have, why = check_value(path, s)
        if have != want:
            shown = f"kvmsim: {have}, {why}" if have is not None else why
            return Decision(False, f"{path} not equal to {want} ({shown})")
    if s.flat_dir is not None and not (s.flat_dir / t.file).is_file():
        return Decision(False, f"Test file '{t.file}' not found")
    for pred, why in NOT_MODELLED:
        if pred(t):
            return Decision(False, why)
    n = t.smp_count
    if n is None or n > 1:
        if not s.smp1:
            return Decision(False, f"smp = {t.smp}")
        return Decision(True, f"smp = {t.smp} in the cfg, run on 1 vCPU (--smp1)")
    return Decision(True)


def select(tests: list[UnitTest], names: list[str], s: Settings) -> list[UnitTest]:
    """run_tests.sh's selection: the named tests (all if none), then -g GROUP; unknown names are errors."""
    if names:
        known = {t.name for t in tests}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise KeyError(", ".join(unknown))
        tests = [t for t in tests if t.name in names]
    if s.only_group is not None:
        tests = [t for t in tests if s.only_group in t.groups]
    return tests
