"""A jump into a page the CPU has not run code from yet: the instruction before it retired.

The silicon stops at the first block of an unscanned page (trap.py's block hook) before that
block's first count hook, so the count then equals the instructions retired.  Seen as the
instruction budget and as gdb's stepi (one instruction each) from the reset vector, whose JMP
leads to the ROM's first page."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gdbclient import RspClient
from kvmsim.debug.engine import Debugger
from kvmsim.debug.gdbregs import I386
from kvmsim.debug.gdbstub import GdbStub, listen, serve_forever
from kvmsim.debug.gdbtarget import DebuggerTarget
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios/mode-switch-real-to-long.yaml"
# reset_vector: jmp rom_start (to IP 0), then cli (1 byte), then lgdtl %cs:... (7 bytes)
AFTER = {1: 0x0, 2: 0x1, 3: 0x8}


@pytest.mark.parametrize("budget", sorted(AFTER))
def test_instruction_budget_counts_the_jump_into_a_new_page(budget):
    sc = load_scenario(SCENARIO)
    sc.limits.max_guest_insns = budget
    res = run_scenario(sc, backend="sim")
    assert res.stop.reason == "limit" and res.guest_insns == budget
    assert res.regs["rip"] == AFTER[budget]


def test_gdb_stepi_from_the_reset_vector_runs_one_instruction_each():
    dbg = Debugger(load_scenario(SCENARIO))
    server = listen("127.0.0.1", 0)
    stub = GdbStub(DebuggerTarget(dbg))
    threading.Thread(target=serve_forever, args=(stub, server), daemon=True).start()
    c = RspClient(server.getsockname()[1])
    try:
        eip = I386.index("eip")
        for budget in sorted(AFTER):
            assert c.ask(b"vCont;s:1").startswith(b"T05")
            assert int.from_bytes(bytes.fromhex(c.ask(b"p%x" % eip).decode()), "little") == AFTER[budget]
    finally:
        c.close()
        dbg.close()
