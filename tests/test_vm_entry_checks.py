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
