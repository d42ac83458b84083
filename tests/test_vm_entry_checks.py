"""VM-entry checks on guest segment bases (SDM 26.3.1.2-3): KVM_SET_SREGS accepts a CS base with bits
63:32 set or a non-canonical FS/GS/TR/GDTR base, the VM entry then fails and KVM reports
KVM_EXIT_FAIL_ENTRY with the exit reason INVALID_STATE|FAILED_VMENTRY (0x80000021), where the sim
used to end in a KvmSimBug (make fuzz-scenarios, mutant 1:1561)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario

HEAD = ("name: t\ndescription: entry checks\nguest:\n  mode: {mode}\n  asm: |\n    .globl _start\n"
        "    _start:\n        EXIT 0\n")
FAILED_INVALID_STATE = 0x80000021


@pytest.mark.parametrize("mode,sregs,fails", [
    ("prot32", "cs: {base: 0x100000000}", True),
    ("prot32", "ds: {base: 0x100000000, present: 1}", True),
    ("long64", "fs: {base: 0x0000800000000000}", True),
    ("long64", "gs: {base: 0xffff800000000000}", False),     # canonical
    ("long64", "gdt: {base: 0x0001000000000000, limit: 0x2f}", True),
    ("prot32", "cs: {base: 0}", False),
    ("prot32", "es: {base: 0x100000000, present: 0}", False),  # unusable: its base is not checked
])
def test_bad_segment_base_fails_vm_entry(tmp_path: Path, mode: str, sregs: str, fails: bool) -> None:
    text = HEAD.format(mode=mode).replace("EXIT 0", "hlt") + f"vcpu:\n  sregs:\n    {sregs}\n"
    text = text.replace("    .globl _start\n", '    .include "kvmsim.inc"\n    .globl _start\n')
    f = tmp_path / "t.yaml"
    f.write_text(text)
    res = run_scenario(load_scenario(f))
    if fails:
        assert res.stop.reason == "fail-entry" and res.stop.code == FAILED_INVALID_STATE, res.stop
        assert res.exits == {"INVALID_STATE|FAILED_VMENTRY": 1}
        assert res.guest_insns == 0
    else:
        assert res.stop.reason == "hlt", res.stop


@pytest.mark.parametrize("mode,regs,fails", [
    ("prot32", "rip: 0x100000001", True),            # bits 63:32 outside 64-bit mode (mutant 6:981)
    ("long64", "rip: 0x0000800000000000", True),     # not canonical
    ("long64", "rip: 0x100000", False),
    ("prot32", "rflags: 0x0", False),                # KVM sets the fixed bit 1 itself
    ("long64", "rflags: 0x20002", True),             # VM in IA-32e mode
])
def test_bad_rip_or_rflags_fails_vm_entry(tmp_path: Path, mode: str, regs: str, fails: bool) -> None:
    text = (f"name: t\ndescription: entry checks\nguest:\n  mode: {mode}\n  asm: |\n    .include \"kvmsim.inc\"\n"
            f"    .globl _start\n    _start:\n        hlt\nvcpu:\n  regs:\n    {regs}\n")
    f = tmp_path / "t.yaml"
    f.write_text(text)
    res = run_scenario(load_scenario(f))
    if fails:
        assert res.stop.reason == "fail-entry" and res.stop.code == FAILED_INVALID_STATE, res.stop
    else:
        assert res.stop.reason != "fail-entry", res.stop


@pytest.mark.parametrize("rflags,fails", [(0x8, True), (0x400002, True), (0x8002, True), (0x0, False), (0x202, False)])
def test_reserved_rflags_from_set_regs_fail_vm_entry(rflags: int, fails: bool) -> None:
    """Through the API (a scenario's vcpu.regs refuses these at check): KVM_SET_REGS takes them, the
    entry fails; RFLAGS 0 is fine because KVM sets the fixed bit 1 itself."""
    import mmap

    from kvmsim.api import FailEntry, Kvm

    buf = mmap.mmap(-1, 0x10000)
    with Kvm("sim") as kvm, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, 0xFFFF0000, buf)
        buf[0xFFF0:0xFFF2] = b"\xf4\xf4"       # hlt at the reset vector
        vcpu = vm.create_vcpu(0)
        regs = vcpu.get_regs()
        regs.rflags = rflags
        vcpu.set_regs(regs)
        got = vcpu.run()
        if fails:
            assert isinstance(got, FailEntry) and got.hardware_entry_failure_reason == FAILED_INVALID_STATE, got
        else:
            assert not isinstance(got, FailEntry), got
        vcpu.close()
    buf.close()
