"""Real gdb (Debian's package) against `kvmsim debug FILE --gdb`: attach, break on a guest symbol,
continue, stepi, info registers, x/4xb, monitor vmcs, detach; in a long64 guest and in one that
switches from real mode to long mode.  Skipped when gdb is not installed (`make test` installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import build_image

ROOT = Path(__file__).resolve().parents[1]
GDB = shutil.which("gdb")
pytestmark = pytest.mark.skipif(GDB is None, reason="gdb is not installed (apt-get install gdb)")


class Served:
    """`kvmsim debug FILE --gdb 127.0.0.1:0` in a subprocess; the port and ELF from what it prints."""

    def __init__(self, scenario: Path, elf: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "kvmsim", "debug", str(scenario), "--gdb",
                                      "127.0.0.1:0", "--elf", str(elf)], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.head = [self.proc.stdout.readline() for _ in range(3)]
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.head[0])
        assert found, self.head
        self.endpoint = f"127.0.0.1:{found.group(1)}"
        assert str(elf) in self.head[1] and elf.is_file()

    def gdb(self, *commands: str) -> str:
        # No core file should gdb itself fail an internal check (it asks, and batch mode says yes).
        argv = [GDB, "-nx", "-batch", "-iex", "maint set internal-error corefile no"]
        for c in commands:
            argv += ["-ex", c]
        # One stream: gdb prints `monitor` output and the target's console on stderr.
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        return done.stdout

    def finish(self) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, "".join(self.head) + out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def _reg(out: str, name: str, nth: int = 0) -> int:
    """The nth value `info registers` showed for `name` (-1: the last)."""
    found = re.findall(rf"^{name}\s+(0x[0-9a-f]+)", out, re.MULTILINE)
    assert found, (name, out)
    return int(found[nth], 16)


def _xb(out: str, addr: int) -> bytes:
    found = re.search(rf"^{addr:#x}[^:]*:\s+((?:0x[0-9a-f]{{2}}\s*){{4}})$", out, re.MULTILINE)
    assert found, (hex(addr), out)
    return bytes(int(b, 16) for b in found.group(1).split())


def test_gdb_long64(tmp_path):
    scenario = ROOT / "tests/data/gdb/long64.yaml"
    image = build_image(load_scenario(scenario))
    sym = image.symbols
    s = Served(scenario, tmp_path / "guest.elf")
    try:
        out = s.gdb(f"file {tmp_path / 'guest.elf'}", f"target remote {s.endpoint}",
                    "break pio_out", "continue",
                    "info registers rip", "stepi", "info registers rip rax rcx", "x/4xb $pc",
                    "monitor vmcs", "set $rcx = 0x40", "monitor break exit IO_INSTRUCTION", "continue",
                    "monitor vmcs", "detach")
        code, served = s.finish()
    finally:
        s.kill()
    assert re.search(rf"Breakpoint 1, {sym['pio_out']:#018x} in pio_out \(\)", out), out
    # stepi over the OUT: it exits to KVM (and userspace) and the step ends after it.
    assert re.search(rf"rip\s+{sym['after_out']:#x}\s+{sym['after_out']:#x} <after_out>", out), out
    assert _reg(out, "rax") == 0x11 and _reg(out, "rcx") == 0x22
    off = sym["after_out"] - image.load_addr
    assert _xb(out, sym["after_out"]) == image.image[off:off + 4]
    first, second = out.split("Breakpoint 2")[0], out.split("Breakpoint 2")[-1]
    assert "IO_INSTRUCTION" in first and re.search(r"0x0*800040\b", first)   # OUT imm8, port 0x80, size 1
    # The kvmsim breakpoint on IO exits stops gdb at the final OUT; its qualification names port 0xf4.
    assert "Program received signal SIGTRAP" in second and re.search(r"0x0*f40043\b", second)
    assert "[Inferior 1 (Remote target) detached]" in out
    # ECX was 0x40 by gdb's hand: the guest exits with 0x41.
    assert code == 0 and "run ended: debug-exit 65" in served, served


def test_gdb_real_to_long_mode_switch(tmp_path):
    scenario = ROOT / "scenarios/mode-switch-real-to-long.yaml"
    image = build_image(load_scenario(scenario))
    sym = image.symbols
    elf = tmp_path / "guest.elf"
    s = Served(scenario, elf)
    try:
        # symbol-file, not file: an i386 executable would pin gdb to i386 (see README).
        out = s.gdb(f"symbol-file {elf}", f"target remote {s.endpoint}", "show architecture",
                    "info registers eip cs", "break prot32", "break long64", "continue",
                    "info registers eip cs", "stepi", "info registers eip", "continue",
                    "disconnect", f"target remote {s.endpoint}", "show architecture",
                    "info registers rip cs", "stepi", "info registers rip rax", "x/4xb $pc",
                    "monitor vmcs", "monitor bt", "detach")
        code, served = s.finish()
    finally:
        s.kill()
    first, second = out.split("Breakpoint 2,")
    assert '(currently "i386")' in first
    assert _reg(first, "eip") == 0xFFF0 and _reg(first, "cs") == 0xF000       # the reset state
    assert re.search(rf"Breakpoint 1, {sym['prot32']:#x} in prot32 \(\)", first), out
    assert re.search(r"^cs\s+0x8\s", first, re.MULTILINE)
    assert "kvmsim: the vCPU is now in long64 mode" in out     # gdb's console (stderr in batch mode)
    assert re.search(rf" {sym['long64']:#x} in long64 \(\)", second), out
    # Reconnected: gdb re-read the description and shows the 64-bit register file.
    assert '(currently "i386:x86-64")' in second
    assert re.search(r"^cs\s+0x18\s", second, re.MULTILINE)
    assert _reg(second, "rax") == 0x0123456789ABCDEF                          # movabs, stepped
    assert _reg(second, "rip", 0) == sym["long64"]
    rip = _reg(second, "rip", -1)
    assert rip == sym["long64"] + 10                                          # past the 10-byte movabs
    off = rip - image.load_addr
    assert _xb(second, rip) == image.image[off:off + 4]
    assert "CR_ACCESS" in second                   # monitor vmcs: the last exit, MOV to CR0 (paging on)
    assert "long64+0xa" in second                  # monitor bt: the guest frame, by kvmsim's symbolizer
    assert "[Inferior 1 (Remote target) detached]" in second
    assert code == 0 and "run ended: debug-exit 0" in served, served
