"""`kvmsim debug` in a real terminal (tmux): keys go in with send-keys, the screen comes back with
capture-pane.  Skips when tmux is absent (`make .venv/.installed` installs it with apt)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, SPIN

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (make .venv/.installed installs it)")
KVMSIM = str(Path(sys.executable).parent / "kvmsim")


class Terminal:
    """One tmux server and session running a command; the screen includes the scrollback."""

    def __init__(self, argv: list[str], tmp_path: Path) -> None:
        self.sock = f"kvmsim-dbg-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        env = f"KVMSIM_DEBUG_HISTORY={shlex.quote(str(tmp_path / 'history'))} TERM=xterm"
        shell = f"cd {shlex.quote(str(REPO))} && env {env} {shlex.join(argv)}; echo EXITED $?; sleep 60"
        self._tmux("new-session", "-d", "-s", "t", "-x", "180", "-y", "50", shell)
        self._tmux("set-option", "-t", "t", "history-limit", "10000")

    def _tmux(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.sock, "-f", "/dev/null", *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def type(self, text: str, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)
        if enter:
            self._tmux("send-keys", "-t", "t", "Enter")

    def key(self, name: str) -> None:
        self._tmux("send-keys", "-t", "t", name)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t", "-S", "-10000")

    def wait(self, text: str, count: int = 1, timeout: float = 30.0) -> str:
        """Until `text` is on the screen `count` times."""
        end = time.monotonic() + timeout
        while True:
            s = self.screen()
            if s.count(text) >= count:
                return s
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} (x{count}) never appeared; screen:\n{s}")
            time.sleep(0.1)

    def prompt(self, timeout: float = 30.0) -> None:
        """Until an empty prompt is the last line: keys typed earlier could race a Ctrl-C's handler."""
        end = time.monotonic() + timeout
        while (self.screen().rstrip().splitlines() or [""])[-1].strip() != "(kvmsim)":
            if time.monotonic() > end:
                raise AssertionError(f"no fresh prompt; screen:\n{self.screen()}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.sock, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def term(tmp_path):
    """Start terminals; each is closed when the test ends."""
    with contextlib.ExitStack() as made:
        yield lambda argv: made.enter_context(contextlib.closing(Terminal(argv, tmp_path)))


def test_an_mmio_exit_stage_by_stage_at_the_prompt(term):
    t = term([KVMSIM, "debug", "scenarios/mmio-read-no-decode.yaml"])
    t.wait("(kvmsim)")
    t.type("break exit EPT_VIOLATION")
    t.wait("Breakpoint 1: exit EPT_VIOLATION")
    t.type("c")
    t.wait("Breakpoint 1, [vm-exit] kvm_exit: vcpu 0 reason EPT_VIOLATION")
    t.type("vmcs")
    t.wait("[read gva_valid gva_translated]")
    for label in ("[exit-handler] handle_ept_violation", "[emulator-decode] x86_decode_insn",
                  "[emulator-execute] x86_emulate_insn"):
        t.type("step")
        t.wait(label)
    t.type("ctxt")
    t.wait("execute em_mov")
    for label in ("[userspace-exit] kvm_userspace_exit", "[complete-userspace-io] complete_emulated_mmio"):
        t.type("s")
        t.wait(label)
    t.type("bt")
    t.wait("#1  kvm_arch_vcpu_ioctl_run")
    t.type("frobnicate")
    t.wait("error: unknown command 'frobnicate'")
    t.type("half a command", enter=False)
    t.key("C-c")                                   # Ctrl-C at the prompt: the line goes, the session stays
    t.wait("^C")
    t.prompt()
    t.type("info break")
    t.wait("1    break       y    1     exit EPT_VIOLATION")
    t.type("break func complete_emulated_m", enter=False)
    t.key("Tab")                                   # readline completion over the kernel's function names
    t.wait("break func complete_emulated_mmio")
    t.key("Enter")
    t.wait("Breakpoint 2: func complete_emulated_mmio")
    t.key("Up")                                    # readline history
    t.wait("(kvmsim) break func complete_emulated_mmio", count=2)
    t.key("C-c")
    t.wait("^C", count=2)
    t.prompt()
    t.type("set reg rbx 0xd0000010")
    t.wait("rbx = 0xd0000010")
    t.type("finish")
    t.wait("[vm-entry] kvm_entry: vcpu 0, rip 0x10000c")
    t.type("c")                                    # the second read now goes to 0xd0000014
    t.wait("Breakpoint 2, [complete-userspace-io] complete_emulated_mmio()")
    t.type("kvm_run")
    t.wait("mmio.phys_addr 0xd0000014")
    t.type("q")
    s = t.wait("EXITED 0")
    assert "Traceback" not in s


def test_ctrl_c_while_running_stops_the_guest(term, tmp_path):
    sc = tmp_path / "spin.yaml"
    asm = '.include "kvmsim.inc"\n.globl _start\n' + SPIN
    sc.write_text("name: spin\ndescription: spins without exits\nguest:\n  mode: long64\n  asm: |\n"
                  + "".join(f"    {line}\n" for line in asm.splitlines())
                  + "devices:\n  - {type: debug-exit, port: 0xf4}\nlimits: {max_guest_insns: null}\n")
    t = term([KVMSIM, "debug", str(sc)])
    t.wait("(kvmsim)")
    t.type("c")
    time.sleep(0.5)
    t.key("C-c")                                   # no exit comes: the second Ctrl-C stops the guest
    time.sleep(0.3)
    t.key("C-c")
    t.wait("interrupted at 0x")
    t.wait("<spin>")
    t.type("set reg rip ok")
    t.type("c")
    t.wait("run ended: debug-exit 0")
    t.type("q")
    assert "Traceback" not in t.wait("EXITED 0")
