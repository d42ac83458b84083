"""A scenario's `vcpu:` section: the vCPU state over the mode's boot set-up, and the checks
KVM_SET_SREGS would fail, done at load time so that `check` rejects what `run` would.

The order is the VMM's (as KVM selftests' vcpu_setup then a test's own vcpu_sregs_set):
vmm/boot.py's setup_boot, then KVM_GET_SREGS, the scenario's fields over it, KVM_SET_SREGS,
then the same for KVM_GET_REGS / KVM_SET_REGS.  Both backends take the same ioctls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvmsim.errors import BackendError, ScenarioError
from kvmsim.uapi import KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KvmCpuidEntry2, KvmRegs, KvmSegment, KvmSregs, VcpuFd, VmFd
from kvmsim.vmm.boot import mode_sregs
from kvmsim.vmm.cpuid import table_entries

if TYPE_CHECKING:
    from kvmsim.scenario.schema import Scenario, SregsState, VcpuState

X86_CR0_PE, X86_CR0_PG = 1 << 0, 1 << 31
X86_CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
SEGMENT_FIELDS = ("selector", "base", "limit", "type", "present", "dpl", "db", "s", "l", "g", "avl")
SREG_SCALARS = ("cr0", "cr3", "cr4", "efer", "apic_base")


def apply_sregs(sregs: KvmSregs, want: "SregsState") -> KvmSregs:
    """The given fields of `want` over `sregs` (in place, and returned)."""
    for name in SREG_SCALARS:
        if (v := getattr(want, name)) is not None:
            setattr(sregs, name, v)
    for name in KvmSregs.SEGMENTS:
        seg = getattr(want, name)
        if seg is None:
            continue
        cur: KvmSegment = getattr(sregs, name)
        for f in SEGMENT_FIELDS:
            if (v := getattr(seg, f)) is not None:
                setattr(cur, f, v)
        cur.unusable = 0 if cur.present else 1
    for name in ("gdt", "idt"):
        dt = getattr(want, name)
        if dt is not None:
            cur_dt = getattr(sregs, name)
            if dt.base is not None:
                cur_dt.base = dt.base
            if dt.limit is not None:
                cur_dt.limit = dt.limit
    return sregs


def apply_regs(regs: KvmRegs, want: Any) -> KvmRegs:
    for name, _ in KvmRegs._fields_:
        if (v := getattr(want, name)) is not None:
            setattr(regs, name, v)
    return regs


def has_sregs(want: "VcpuState") -> bool:
    return bool(want.sregs.model_fields_set)


def has_regs(want: "VcpuState") -> bool:
    return bool(want.regs.model_fields_set)


def boot_sregs(mode: str) -> KvmSregs:
    """The sregs a new vCPU has after setup_boot in `mode` (KVM's reset state, then the mode's)."""
    from kvmsim.kvm.reset import reset_sregs  # the sim model (unicorn) loads only for a scenario setting sregs or CPUID

    sregs = reset_sregs()
    mode_sregs(sregs, mode)
    return sregs


def _sim_cpuid_limits(sc: "Scenario") -> tuple[int, int, bool]:
    """(MAXPHYADDR, CPUID-dependent reserved CR4 bits, x2APIC allowed) of the table the sim's vCPU
    gets: the default one, the scenario's kvm.cpuid over it, or the scenario's whole table
    (runner.make_machine).  Simplified: entries are looked up by (leaf, subleaf) exactly."""
    # The sim model (unicorn) loads only for a scenario that sets sregs or CPUID.
    from kvmsim.kvm import cr
    from kvmsim.kvm.cpuid import default_cpuid_entries

    if sc.kvm.cpuid_replaced:
        entries = table_entries(sc.kvm.cpuid.entries)  # type: ignore[union-attr]
    elif sc.kvm.cpuid_overrides:
        entries = cpuid_with_overrides(None, sc, "sim")  # type: ignore[arg-type]  # the sim needs no VM
    else:
        entries = default_cpuid_entries()
    table = {(e.function, e.index): e for e in entries}

    def has(leaf: int, sub: int, reg: str, bit: int) -> bool:
        e = table.get((leaf, sub))
        return e is not None and bool(getattr(e, reg) >> bit & 1)

    e = table.get((0x80000008, 0))
    maxphy = (e.eax & 0xFF) if e is not None and e.eax & 0xFF else 36     # cpuid_maxphyaddr
    rsvd = 0
    for cr4_bit, feature in cr.CR4_FEATURES.items():
        if not has(*feature):
            rsvd |= cr4_bit
    return maxphy, rsvd, has(1, 0, "ecx", 21)


def sregs_problem(sc: "Scenario") -> tuple[tuple[str, ...], str] | None:
    """(field path under vcpu.sregs, message) for the first check of kvm_is_valid_sregs /
    kvm_apic_set_base the scenario's initial state fails, in the kernel's order; None if it passes."""
    want = sc.vcpu.sregs
    if not want.model_fields_set and not (sc.kvm.cpuid_replaced or sc.kvm.cpuid_overrides):
        return None   # the boot state under the default CPUID table is valid
    s = apply_sregs(boot_sregs(sc.guest.mode), want)
    given = want.model_fields_set

    def blame(*cands: str) -> tuple[str, ...]:
        """The first of `cands` the scenario wrote (what to fix), else the first."""
        return (next((c for c in cands if c in given), cands[0]),)

    einval = "(KVM_SET_SREGS: EINVAL)"
    maxphy, cr4_rsvd, x2apic = _sim_cpuid_limits(sc)
    mode = sc.guest.mode
    if s.efer & EFER_LME and s.cr0 & X86_CR0_PG:
        if not s.cr4 & X86_CR4_PAE:
            return blame("cr4", "cr0", "efer"), (f"EFER.LME with CR0.PG (64-bit paging) needs CR4.PAE; cr4 is "
                                                  f"{s.cr4:#x} {einval}")
        if not s.efer & EFER_LMA:
            return blame("efer", "cr0"), (f"EFER.LME with CR0.PG (64-bit paging) needs EFER.LMA too; efer is "
                                          f"{s.efer:#x} {einval}")
        if s.cr3 >> maxphy:
            return blame("cr3", "cr0", "efer"), (f"cr3 {s.cr3:#x} has bits at or above MAXPHYADDR ({maxphy}) "
                                                 f"{einval}")
    elif s.efer & EFER_LMA:
        return blame("efer", "cr0"), (f"EFER.LMA without both EFER.LME and CR0.PG (efer {s.efer:#x}, cr0 {s.cr0:#x}"
                                      f"{', the ' + mode + ' boot value' if 'cr0' not in given else ''}) {einval}")
    elif s.cs.l:
        return blame("cs", "efer", "cr0"), (f"a 64-bit code segment (cs.l=1) outside 64-bit paging (efer "
                                            f"{s.efer:#x}, cr0 {s.cr0:#x}) {einval}")
    if s.cr4 & cr4_rsvd:
        return ("cr4",), (f"cr4 {s.cr4:#x} sets bits {s.cr4 & cr4_rsvd:#x} whose feature the vCPU's CPUID "
                          f"does not have {einval}")
    # kvm_is_valid_cr0's cases and the CPUID-independent CR4 bits are field checks (SregsState).
    if "apic_base" in given:
        if s.apic_base >> maxphy:
            return ("apic_base",), (f"apic_base {s.apic_base:#x} has bits at or above MAXPHYADDR ({maxphy}) "
                                    f"{einval}")
        if s.apic_base & (1 << 10) and not x2apic:
            return ("apic_base",), f"apic_base {s.apic_base:#x} enables x2APIC, which the CPUID lacks {einval}"
    return None


def apply_vcpu_state(sc: "Scenario", vcpu: "VcpuFd") -> None:
    """After setup_boot: KVM_SET_SREGS then KVM_SET_REGS with the scenario's fields over the
    boot state.  A state the kernel still refuses (host CPUID) is bad input at vcpu.sregs."""
    want = sc.vcpu
    if has_sregs(want):
        try:
            vcpu.set_sregs(apply_sregs(vcpu.get_sregs(), want.sregs))
        except BackendError as e:
            raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("vcpu", "sregs"),
                                f"field vcpu.sregs: {e}") from None
    if has_regs(want):
        vcpu.set_regs(apply_regs(vcpu.get_regs(), want.regs))


def cpuid_with_overrides(vm: VmFd, sc: "Scenario", backend: str) -> list[KvmCpuidEntry2]:
    """The scenario's kvm.cpuid on top of the backend's base table.

    sim: the model's default table (the one create_vcpu installs); kvm: KVM_GET_SUPPORTED_CPUID,
    which is what RealVm.create_vcpu installs (as KVM selftests' vm_vcpu_add).
    """
    if backend == "kvm":
        base = vm.kvm.supported_cpuid()  # type: ignore[attr-defined]
    else:
        from kvmsim.kvm.cpuid import default_cpuid_entries  # the sim model (unicorn) loads only for the sim

        base = default_cpuid_entries()
    entries = {(e.function, e.index): e for e in base}
    for o in sc.kvm.cpuid_overrides:
        e = entries.setdefault((o.function, o.index), KvmCpuidEntry2(function=o.function, index=o.index,
                                                                      flags=KVM_CPUID_FLAG_SIGNIFCANT_INDEX if o.index else 0))
        for reg in ("eax", "ebx", "ecx", "edx"):
            if getattr(o, reg) is not None:
                setattr(e, reg, getattr(o, reg))
    return list(entries.values())
