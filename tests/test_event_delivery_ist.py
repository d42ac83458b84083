"""An IDT gate with an IST index switches to that stack of the 64-bit TSS (IST1 at offset 0x24,
after RSP0-2 and a reserved qword; SDM 6.14.5, fig. 8-11), whatever the current ring.  kvm-unit-tests
smap delivers its #PF on IST1 (set_intr_alt_stack); a wrong offset made that a #DF."""

from __future__ import annotations

import pytest

from backends import BACKENDS
from kvmsim.scenario.runner import run_scenario
from tests.simvm import scenario

IST_GUEST = """
        .include "kvmsim.inc"
        GUEST_ENTRY
        movq    $0x1111000, 0x2800 + 0x1c       # the reserved qword before IST1: must not be used
        movq    $0x7f000, 0x2800 + 0x24         # TSS.IST1
        movq    $0x7e000, 0x2800 + 0x2c         # TSS.IST2
        SET_IDT_HANDLER DE_VECTOR, handler
        movb    $\\ist, 0x3000 + DE_VECTOR * 16 + 4   # the #DE gate's IST index
        movq    %rsp, %rsi
        xorl    %ecx, %ecx
        divl    %ecx                            # #DE, delivered by the CPU (not intercepted)
        EXIT    1
handler:
        movq    %rsp, %rax                      # the frame's bottom: the stack the CPU chose
        EXIT_EAX
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ist,stack", [(1, 0x7f000), (2, 0x7e000), (0, None)], ids=["IST1", "IST2", "no-IST"])
def test_fault_through_an_ist_gate_uses_that_tss_stack(backend: str, ist: int, stack: int | None) -> None:
    res = run_scenario(scenario(IST_GUEST.replace("\\ist", str(ist))), backend=backend)
    assert res.stop.reason == "debug-exit", res.stop
    frame = 5 * 8                                     # SS, RSP, RFLAGS, CS, RIP; #DE has no error code
    want = (stack if stack is not None else res.regs["rsi"] & ~0xF) - frame
    assert res.stop.code == want & 0xFFFF_FFFF
