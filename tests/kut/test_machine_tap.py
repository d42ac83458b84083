"""A cfg entry as the scenario mapping x86/run's QEMU machine becomes, and the TAP 13 output."""

from __future__ import annotations

import io
from pathlib import Path

from kvmsim.kut import machine, outcome
from kvmsim.kut.cfg import parse_cfg
from kvmsim.kut.run import Printer


def test_scenario_mapping_mirrors_x86_run() -> None:
    t = parse_cfg("[vmexit_cpuid]\nfile = vmexit.flat\ntest_args = 'cpuid'\ntimeout = 10\n")[0]
    doc = machine.scenario_dict(t, Path("/k/x86/vmexit.flat"), Path("/l/env"), {"force_emulation_prefix": True},
                                timeout_factor=3)
    assert doc["guest"] == {"multiboot": "/k/x86/vmexit.flat", "cmdline": "cpuid", "modules": ["/l/env"]}
    assert [d["type"] for d in doc["devices"]] == ["serial16550", "isa-debug-exit", "fw-cfg", "pc-testdev",
                                                   "bochs-shutdown", "acpi-pm-timer", "acpi-tables", "bios-irq"]
    assert doc["devices"][1] == {"type": "isa-debug-exit", "iobase": 0xF4, "iosize": 4}
    assert doc["kvm"] == {"irqchip": True, "pit": True, "force_emulation_prefix": True}   # QEMU's in-kernel PIC and PIT
    assert doc["memory"] == [{"gpa": 0, "size": 128 << 20}]
    assert doc["limits"]["wall_seconds"] == 30 and doc["limits"]["max_guest_insns"] == 10 * machine.INSNS_PER_SECOND


def test_pc_ram_split_above_3_5_gib() -> None:
    assert machine.ram_slots(2048) == [{"gpa": 0, "size": 2 << 30}]
    assert machine.ram_slots(4096) == [{"gpa": 0, "size": 3 << 30}, {"gpa": 1 << 32, "size": 1 << 30}]


def test_environ_is_key_value_lines() -> None:
    text = machine.environ_text("6.18")
    assert "KERNEL_VERSION=6\n" in text and "KERNEL_PATCHLEVEL=18\n" in text
    assert all("=" in ln for ln in text.splitlines())


def test_tap13() -> None:
    buf = io.StringIO()
    p = Printer(tap=True, out=buf)
    p.result(outcome.from_run("a", "isa-debug-exit", 3, "", "PASS: x\nFAIL: y\nSKIP: z\nSUMMARY: 3 tests\n", "90s"))
    p.result(outcome.Outcome("b", "SKIP", reason="smp = 2"))
    p.result(outcome.from_run("c", "limit", None, "wall_seconds 1 reached", "", "1s"))
    p.end()
    assert buf.getvalue().splitlines() == [
        "TAP version 13",
        "ok 1 - a: x", "not ok 2 - a: y", "ok 3 - a: z # skip",
        "ok 4 - b # SKIP smp = 2",
        "not ok 5 - c: timeout; duration=1s (wall_seconds 1 reached)",
        "1..5"]


def test_plain_lines() -> None:
    buf = io.StringIO()
    p = Printer(tap=False, out=buf)
    p.result(outcome.Outcome("vmx", "SKIP", reason="smp = 2"))
    p.result(outcome.from_run("emulator", "isa-debug-exit", 1, "", "SUMMARY: 86 tests\n", "90s"))
    assert buf.getvalue() == "SKIP vmx (smp = 2)\nPASS emulator (86 tests)\n"


def test_cpu_flags_become_cpuid_overrides() -> None:
    from kvmsim.kut.cpu import cpuid_overrides, feature_flags
    from kvmsim.uapi import KvmCpuidEntry2
    base = [KvmCpuidEntry2(function=1, index=0, flags=0, eax=0x50657, ebx=0, ecx=(1 << 21) | 1, edx=0),
            KvmCpuidEntry2(function=7, index=0, flags=1, eax=0, ebx=0, ecx=0, edx=0)]
    assert feature_flags("qemu64,-x2apic,+tsc-deadline,pku=on") == [("x2apic", False), ("tsc-deadline", True),
                                                                      ("pku", True)]
    entries, ignored = cpuid_overrides("qemu64,-x2apic,+tsc-deadline,+umip,+host-phys-bits", base)
    assert entries == [{"function": 1, "index": 0, "ecx": (1 << 24) | 1},      # x2APIC hidden, deadline shown
                       {"function": 7, "index": 0, "ecx": 1 << 2}]             # UMIP
    assert ignored == ["+host-phys-bits"]
    assert cpuid_overrides(None, base) == ([], [])


def test_cpu_vendor_becomes_the_leaf0_vendor_string() -> None:
    """syscall's `-cpu Opteron_G1,vendor=AuthenticAMD`: QEMU's vendor property sets leaf 0."""
    from kvmsim.kut.cpu import cpuid_overrides
    from kvmsim.uapi import KvmCpuidEntry2
    base = [KvmCpuidEntry2(function=0, index=0, flags=0, eax=0xD, ebx=0, ecx=0, edx=0)]
    entries, ignored = cpuid_overrides("Opteron_G1,vendor=AuthenticAMD,vendor=short", base)
    e = entries[0]
    raw = b"".join(e[r].to_bytes(4, "little") for r in ("ebx", "edx", "ecx"))
    assert (e["function"], e["index"], raw) == (0, 0, b"AuthenticAMD")
    assert ignored == ["vendor=short"]
