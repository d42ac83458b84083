"""The gdb stub driving the real Debugger engine (debug/gdbtarget.py), through the protocol client."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from gdbclient import RspClient
from kvmsim.debug.engine import Debugger
from kvmsim.debug.gdbregs import AMD64, I386
from kvmsim.debug.gdbstub import GdbStub, listen, serve_forever
from kvmsim.debug.gdbtarget import DebuggerTarget
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import build_image, run_scenario

ROOT = Path(__file__).resolve().parents[1]
LONG64 = ROOT / "tests/data/gdb/long64.yaml"
MODE_SWITCH = ROOT / "scenarios/mode-switch-real-to-long.yaml"


class Session:
    """A Debugger served on an ephemeral port, with a connected client."""

    def __init__(self, path: Path) -> None:
        self.sc = load_scenario(path)
        self.image = build_image(self.sc)
        self.dbg = Debugger(self.sc, self.image)
        self.target = DebuggerTarget(self.dbg)
        server = listen("127.0.0.1", 0)
        self.stub = GdbStub(self.target)
        self.thread = threading.Thread(target=serve_forever, args=(self.stub, server), daemon=True)
        self.thread.start()
        self.c = RspClient(server.getsockname()[1])
        self.c.ask(b"qSupported:swbreak+;hwbreak+")

    def reg(self, name: str, layout=AMD64) -> int:
        n = layout.index(name)
        return int.from_bytes(bytes.fromhex(self.c.ask(b"p%x" % n).decode()), "little")

    def close(self) -> None:
        self.c.close()
        self.dbg.close()


@pytest.fixture
def session():
    """Open stub sessions; each is closed when the test ends."""
    with contextlib.ExitStack() as made:
        yield lambda path: made.enter_context(contextlib.closing(Session(path)))


def test_break_on_symbol_step_and_memory(session):
    s = session(LONG64)
    sym = s.image.symbols
    assert s.reg("rip") == s.image.entry
    assert s.c.ask(b"Z0,%x,1" % sym["pio_out"]) == b"OK"
    r = s.c.ask(b"vCont;c")
    assert r.startswith(b"T05thread:1;") and r.endswith(b"swbreak:;")
    assert s.reg("rip") == sym["pio_out"] and s.reg("rax") == 0x11
    assert s.c.ask(b"z0,%x,1" % sym["pio_out"]) == b"OK"
    # One instruction: the OUT exits, KVM completes it, and the step ends after it.
    assert s.c.ask(b"vCont;s:1").startswith(b"T05")
    assert s.reg("rip") == sym["after_out"]
    off = sym["after_out"] - s.image.load_addr
    assert bytes.fromhex(s.c.ask(b"m%x,5" % sym["after_out"]).decode()) == s.image.image[off:off + 5]
    vmcs = bytes.fromhex(s.c.ask(b"qRcmd," + b"vmcs".hex().encode()).decode()).decode()
    assert "IO_INSTRUCTION" in vmcs


def test_the_first_step_runs_the_first_instruction(session):
    s = session(LONG64)
    assert s.reg("rip") == s.image.entry
    assert s.c.ask(b"vCont;s:1").startswith(b"T05")
    assert s.reg("rip") == s.image.entry + 5 and s.reg("rax") == 0x11     # movl $0x11, %eax: 5 bytes
    s.c.ask(b"s")
    assert s.reg("rip") == s.image.symbols["pio_out"] and s.reg("rcx") == 0x22


def test_hw_breakpoint_and_register_write_change_what_the_guest_does(session):
    s = session(LONG64)
    after = s.image.symbols["after_out"]
    assert s.c.ask(b"Z1,%x,1" % after) == b"OK"
    assert s.c.ask(b"c").endswith(b"hwbreak:;")
    rcx = AMD64.index("rcx")
    assert s.c.ask(b"P%x=%s" % (rcx, (0x40).to_bytes(8, "little").hex().encode())) == b"OK"
    s.c.ask(b"z1,%x,1" % after)
    text, r = s.c.ask_console(b"c")
    assert r == b"W41", (text, r)                  # the guest exits with ECX + 1
    assert "debug-exit 65" in text


def test_monitor_break_on_an_exit_stops_gdb_there(session):
    s = session(LONG64)
    out = bytes.fromhex(s.c.ask(b"qRcmd," + b"break exit EPT_VIOLATION".hex().encode()).decode()).decode()
    assert "Breakpoint" in out
    text, r = s.c.ask_console(b"c")
    assert r.startswith(b"T05") and b"swbreak" not in r and "EPT_VIOLATION" in text
    vmcs = bytes.fromhex(s.c.ask(b"qRcmd," + b"vmcs".hex().encode()).decode()).decode()
    assert "EPT_VIOLATION" in vmcs and "0xd0000000" in vmcs
    bt = bytes.fromhex(s.c.ask(b"qRcmd," + b"bt".hex().encode()).decode()).decode()
    assert "after_out" in bt


def test_breakpoints_and_steps_do_not_change_the_run(session):
    """A run driven by gdb (breakpoints, steps, reads) ends as the plain run does."""
    plain = run_scenario(load_scenario(MODE_SWITCH), backend="sim")
    s = session(MODE_SWITCH)
    sym = s.image.symbols
    for name in ("prot32", "long64"):
        s.c.ask(b"Z0,%x,1" % sym[name])
    for _ in range(3):
        assert s.c.ask(b"c").startswith(b"T05")   # reset vector -> prot32 -> long64 (and after)
        s.c.ask(b"s")
        s.c.ask(b"g")
        if s.target.mode() == "long64":
            break
    assert s.c.ask(b"D") == b"OK"
    s.thread.join(20)
    res = s.dbg.current.result
    assert res is not None and res.stop == plain.stop
    assert res.exits == plain.exits and res.regs == plain.regs
    assert [u.fields for u in res.userspace] == [u.fields for u in plain.userspace]


def test_mode_switch_layouts(session):
    s = session(MODE_SWITCH)
    assert s.target.mode() == "real"
    xml = s.c.ask(b"qXfer:features:read:target.xml:0,3000")
    assert b"<architecture>i386</architecture>" in xml
    assert s.reg("eip", I386) == 0xFFF0 and s.reg("cs", I386) == 0xF000
    s.c.ask(b"Z0,%x,1" % s.image.symbols["long64"])
    text, r = s.c.ask_console(b"c")
    assert r.startswith(b"T05") and "long64 mode" in text
    assert s.reg("eip", I386) == s.image.symbols["long64"]          # still the layout gdb read
    xml = s.c.ask(b"qXfer:features:read:target.xml:0,3000")
    assert b"<architecture>i386:x86-64</architecture>" in xml
    assert s.reg("rip") == s.image.symbols["long64"] and s.reg("cs") == 0x18


SPIN = """\
name: gdb-spin
description: a guest that loops natively forever (no exits), for gdb's Ctrl-C
guest:
  mode: long64
  asm: |
    .include "kvmsim.inc"
    GUEST_ENTRY
    spin:   incq    %rax
            jmp     spin
memory: [{gpa: 0x0, size: 2M}]
limits: {max_guest_insns: null, wall_seconds: 60}
"""


def test_ctrl_c_stops_a_spinning_guest_and_kill_ends_it(session, tmp_path):
    path = tmp_path / "spin.yaml"
    path.write_text(SPIN)
    s = session(path)
    s.c.send(b"vCont;c")
    import time
    time.sleep(0.3)
    s.c.send_raw(b"\x03")
    assert s.c.recv().startswith(b"T02")
    spin = s.image.symbols["spin"]
    assert s.reg("rip") in (spin, spin + 3) and s.reg("rax") > 0     # it ran, and stopped in the loop
    s.c.send(b"k")
    s.thread.join(10)
    assert not s.thread.is_alive() and s.stub.finished
