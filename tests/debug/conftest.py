"""Shared helpers for the debugger tests: small scenarios built from inline assembly."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.schema import Scenario

REPO = Path(__file__).resolve().parents[2]


def scenario(name: str) -> Scenario:
    return load_scenario(REPO / "scenarios" / f"{name}.yaml")


def asm_scenario(asm: str, mode: str = "long64", limits: dict | None = None) -> Scenario:
    spec = {"name": "dbg-test", "description": "debugger test guest",
            "guest": {"mode": mode, "asm": '.include "kvmsim.inc"\n.globl _start\n' + asm},
            "devices": [{"type": "debug-exit", "port": 0xF4},
                        {"type": "regbank", "gpa": 0xD0000000, "size": 0x1000, "values": {0: 0x1234}}]}
    if limits:
        spec["limits"] = limits
    return Scenario.model_validate(spec, context={"base_dir": REPO / "scenarios"})


LOOP = """
_start:
    mov $5, %ecx
loop:
    out %al, $0x80
    dec %ecx
    jnz loop
done:
    EXIT 0
"""

SPIN = """
_start:
    xor %eax, %eax
spin:
    jmp spin
    EXIT 7
ok:
    EXIT 0
"""


@pytest.fixture
def loop_scenario() -> Scenario:
    return asm_scenario(LOOP)
