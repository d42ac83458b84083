"""A unittests.cfg entry as a kvmsim scenario: the machine QEMU's x86/run builds, in scenario fields.

x86/run starts `qemu -nodefaults -device pc-testdev -device isa-debug-exit,iobase=0xf4,iosize=0x4
-serial stdio -kernel X.flat -append ARGS -initrd ENVFILE` on QEMU's pc machine; here that is a
multiboot guest (-append's arguments as its cmdline, the environ file as its one module), the pc
devices the tests reach (fw_cfg, pc-testdev, isa-debug-exit, COM1, the Bochs shutdown port, the
ACPI PM timer and the ACPI tables that point at it), the in-kernel irqchip and PIT (KVM_CREATE_IRQCHIP,
KVM_CREATE_PIT2, as QEMU's default), and what SeaBIOS leaves for hardware IRQs (bios-irq).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kvmsim.kut.cfg import UnitTest

# Virtual time: the cfg's `timeout` seconds become this many retired guest instructions (sim), a
# budget that ends the same run at the same point every time; the wall limit is the timeout scaled
# by the sim's slowness (--timeout-factor) and bounds the kvm backend, which counts nothing.
# Hardware retires billions a second; 50 M keeps a spinning test's budget within what the sim runs
# in the wall limit (about 20 M counted instructions a second here) while sieve's 5.4 G fit its 180 s.
INSNS_PER_SECOND = 50_000_000
MAX_EXITS = 50_000_000               # every serial byte is one exit to userspace: bounded by time instead
GIB = 1 << 30
PC_LOWMEM_SPLIT = 0xE000_0000        # QEMU pc: from 3.5 GiB of RAM up, only 3 GiB stay below 4 GiB
PC_LOWMEM_GIG_ALIGNED = 0xC000_0000
HIGHMEM_BASE = 1 << 32


def ram_slots(mem_mib: int) -> list[dict[str, int]]:
    """QEMU pc's RAM layout: all below 4 GiB, or 3 GiB below and the rest from 4 GiB."""
    size = mem_mib << 20
    if size < PC_LOWMEM_SPLIT:
        return [{"gpa": 0, "size": size}]
    return [{"gpa": 0, "size": PC_LOWMEM_GIG_ALIGNED},
            {"gpa": HIGHMEM_BASE, "size": size - PC_LOWMEM_GIG_ALIGNED}]


def environ_text(kernel_version: str) -> str:
    """The KEY=VALUE lines scripts/arch-run.bash's initrd_create writes (env_params), for kvmsim:
    TARGET, and the (modelled) kernel's version, which the tests' errata checks compare."""
    major, _, minor = kernel_version.partition(".")
    return "".join(f"{k}={v}\n" for k, v in (
        ("TARGET", "kvmsim"),
        ("KERNEL_VERSION_STRING", kernel_version),
        ("KERNEL_VERSION", major),
        ("KERNEL_PATCHLEVEL", minor or "0"),
        ("KERNEL_SUBLEVEL", "0"),
    ))


def scenario_name(test: str) -> str:
    """A scenario name (letters, digits, _.+-) for a cfg test name."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", test).lstrip("_.+-") or "kut"


def scenario_dict(t: UnitTest, flat: Path, env_file: Path, kvm_params: dict[str, Any],
                  timeout_factor: float = 1.0, timeout: float | None = None,
                  cpuid: list[dict[str, int]] | None = None) -> dict[str, Any]:
    """The scenario (as the YAML mapping a user would write) that runs test `t` from image `flat`;
    cpuid: kvm.cpuid overrides for its -cpu flags (cpu.py)."""
    seconds = timeout if timeout is not None else t.timeout_seconds
    args = t.args
    return {
        "name": scenario_name(t.name),
        "description": f"kvm-unit-tests [{t.name}]: {t.file}" + (f" {args}" if args else ""),
        # the multiboot loader puts "<kernel> <cmdline>" in the info block, as QEMU does (argv[0] = the image)
        "guest": {"multiboot": str(flat), **({"cmdline": args} if args else {}), "modules": [str(env_file)]},
        "memory": ram_slots(t.mem_mib),
        "devices": [
            {"type": "serial16550", "port": 0x3F8},
            {"type": "isa-debug-exit", "iobase": 0xF4, "iosize": 4},
            {"type": "fw-cfg", "nb_cpus": 1, "ram_size": t.mem_mib << 20},
            {"type": "pc-testdev"},
            {"type": "bochs-shutdown"},
            {"type": "acpi-pm-timer"},
            {"type": "acpi-tables"},     # the FADT that gives vmexit's inl_from_pmtimer the timer's port
            {"type": "bios-irq"},        # SeaBIOS's PIC/PIT setup and IRQ handlers (realmode's sti; hlt)
        ],
        "kvm": {"irqchip": True, "pit": True, **kvm_params, **({"cpuid": cpuid} if cpuid else {})},
        "limits": {"max_guest_insns": max(1, int(seconds * INSNS_PER_SECOND)),
                   "wall_seconds": max(1.0, seconds * timeout_factor),
                   "max_exits": MAX_EXITS},
    }


def build_scenario(doc: dict[str, Any], base_dir: Path) -> Any:
    """Validate the mapping as the loader would a file; a field kvmsim lacks is a ScenarioError."""
    # per command, not at the top: the schema (pydantic) and the loader's error mapping load only to run
    from pydantic import ValidationError
    from kvmsim.scenario.loader import validation_error
    from kvmsim.scenario.schema import Scenario
    try:
        return Scenario.model_validate(doc, context={"base_dir": base_dir})
    except ValidationError as e:
        raise validation_error(f"<kut {doc['name']}>", e, {}) from None
