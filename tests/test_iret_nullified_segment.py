"""IRET to an outer ring nulls the data segment registers whose DPL the new CPL may not use (SDM
IRET pseudo-code: only the selector); in 64-bit mode the hidden GS base is still what %gs: uses.
QEMU zeroes the whole descriptor cache there; kvm-unit-tests emulator64's "Test ret/iret with a
nullified segment" reads through GS at CPL3 after such an IRET.  Run on both backends."""

from __future__ import annotations

import pytest

from backends import BACKENDS
from kvmsim.scenario.runner import run_scenario
from tests.simvm import scenario

MAGIC = 0x600DF00D
GS_BASE = 0x90000

GUEST = f"""
        .include "kvmsim.inc"
        GUEST_ENTRY
        movl    ${MAGIC:#x}, {GS_BASE:#x} + 8
        movw    $KVMSIM_KERNEL_DS, %ax          # a DPL-0 data segment in GS ...
        movw    %ax, %gs
        movl    $0xc0000101, %ecx               # ... with its base from MSR_GS_BASE
        movl    ${GS_BASE:#x}, %eax
        xorl    %edx, %edx
        wrmsr
        CPL3_IOMAP_DENY_ALL
        andb    $0x0f, TSS + IOMAP + KVMSIM_EXIT_PORT/8     # the debug-exit port, at CPL3
        CPL3_ENTER user
user:
        movw    %gs, %bx                        # nulled by the IRET
        movl    %gs:8, %eax                     # still through the old base
        cmpw    $0, %bx
        jne     1f
        EXIT_EAX
1:      EXIT    1
        CPL3_GDT
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_iret_to_cpl3_nulls_gs_but_keeps_its_base(backend: str) -> None:
    res = run_scenario(scenario(GUEST), backend=backend)
    assert (res.stop.reason, res.stop.code) == ("debug-exit", MAGIC), res.stop
