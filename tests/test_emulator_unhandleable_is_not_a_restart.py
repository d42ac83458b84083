"""x86_emulate_insn: an executor's X86EMUL_UNHANDLEABLE is EMULATION_FAILED, never the string
restart (both are 1 in their own enums; the model once looped forever on CMPXCHG16B over MMIO)."""

from __future__ import annotations

import signal
from pathlib import Path

from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario

ROOT = Path(__file__).resolve().parents[1]


def _alarm(_sig, _frm):
    raise TimeoutError("x86_emulate_instruction looped: UNHANDLEABLE taken for EMULATION_RESTART")


def test_cmpxchg16b_on_mmio_is_an_emulation_failure_after_its_two_reads() -> None:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    try:
        res = run_scenario(load_scenario(ROOT / "scenarios/mmio-cmpxchg16b-fails-long64.yaml"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert res.stop.reason == "internal-error" and res.stop.suberror == 1
    assert [(u.reason, u.fields.get("phys_addr"), u.fields.get("len")) for u in res.userspace] == [
        ("MMIO", 0xD0000030, 8), ("MMIO", 0xD0000038, 8), ("INTERNAL_ERROR", None, None)]
    assert res.emulation["NO_DECODE"] == 1 and res.emulation["PF"] == 1   # one NO_DECODE pass, no re-run
