"""QEMU's `-cpu MODEL,+feat,-feat` in a cfg entry, as kvm.cpuid overrides on the backend's table.

kvmsim has one CPU model (the sim's default CPUID table, or the host's KVM_GET_SUPPORTED_CPUID on
/dev/kvm), so MODEL is not applied; the `+feat`/`-feat` flags it knows set or clear their CPUID
bit in that table, as QEMU would in the model it builds (e.g. xapic's `-x2apic` hides x2APIC).
A flag not in CPU_FEATURES is left as the table has it (listed in the test's log).  `vendor=NAME`
writes the 12-character vendor string into leaf 0, as QEMU's vendor property does (syscall's
`vendor=AuthenticAMD` makes KVM emulate SYSCALL in compatibility mode, which Intel refuses).
"""

from __future__ import annotations

from typing import Any, Iterable

# QEMU feature name -> (leaf, subleaf, register, bit): the flags x86/unittests.cfg uses.
CPU_FEATURES: dict[str, tuple[int, int, str, int]] = {
    "vmx":          (0x1, 0, "ecx", 5),
    "pcid":         (0x1, 0, "ecx", 17),
    "x2apic":       (0x1, 0, "ecx", 21),
    "tsc-deadline": (0x1, 0, "ecx", 24),
    "invpcid":      (0x7, 0, "ebx", 10),
    "umip":         (0x7, 0, "ecx", 2),
    "pku":          (0x7, 0, "ecx", 3),
    "svm":          (0x80000001, 0, "ecx", 2),
}


def feature_flags(cpu: str | None) -> list[tuple[str, bool]]:
    """(feature, on) for each `+feat`/`-feat`/`feat=on|off` of a -cpu value, in order."""
    out: list[tuple[str, bool]] = []
    for part in (cpu or "").split(",")[1:]:
        if part[:1] in "+-" and part[1:]:
            out.append((part[1:], part[0] == "+"))
        elif "=" in part and part.split("=", 1)[1] in ("on", "off"):
            name, val = part.split("=", 1)
            out.append((name, val == "on"))
    return out


def vendor_regs(vendor: str) -> dict[str, int] | None:
    """Leaf 0's EBX, EDX, ECX for a 12-character vendor string (None if it is not 12 ASCII characters)."""
    raw = vendor.encode("ascii", "replace")
    if len(raw) != 12:
        return None
    ebx, edx, ecx = (int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
    return {"ebx": ebx, "ecx": ecx, "edx": edx}


def cpuid_overrides(cpu: str | None, base: Iterable[Any]) -> tuple[list[dict[str, int]], list[str]]:
    """The kvm.cpuid list entries that apply -cpu's known flags to `base` (kvm_cpuid_entry2s),
    and the flags that were not applied."""
    regs = {(e.function, e.index): {r: getattr(e, r) for r in ("eax", "ebx", "ecx", "edx")} for e in base}
    touched: dict[tuple[int, int], set[str]] = {}
    ignored: list[str] = []
    for part in (cpu or "").split(",")[1:]:
        if part.startswith("vendor="):
            vendor = vendor_regs(part.split("=", 1)[1])
            if vendor is None or (0, 0) not in regs:
                ignored.append(part)
                continue
            regs[(0, 0)].update(vendor)
            touched.setdefault((0, 0), set()).update(vendor)
    for name, on in feature_flags(cpu):
        if name not in CPU_FEATURES or CPU_FEATURES[name][:2] not in regs:
            ignored.append(("+" if on else "-") + name)
            continue
        leaf, sub, reg, bit = CPU_FEATURES[name]
        r = regs[(leaf, sub)]
        r[reg] = r[reg] | (1 << bit) if on else r[reg] & ~(1 << bit)
        touched.setdefault((leaf, sub), set()).add(reg)
    entries = [{"function": leaf, "index": sub, **{reg: regs[(leaf, sub)][reg] for reg in sorted(names)}}
               for (leaf, sub), names in sorted(touched.items())]
    return entries, ignored


def base_table(backend: str) -> list[Any]:
    """The table the run's overrides go on top of: the sim's default, or the host's supported CPUID."""
    if backend == "kvm":
        # per command, not at the top: /dev/kvm is opened only for a kvm-backend run
        from kvmsim.realkvm.backend import RealKvm
        kvm = RealKvm()
        try:
            return kvm.supported_cpuid()
        finally:
            kvm.close()
    # per command, not at the top: the sim model loads only to run
    from kvmsim.kvm.cpuid import default_cpuid_entries
    return default_cpuid_entries()
