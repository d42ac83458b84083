"""The gdb stub's Target over the Debugger engine: gdb drives the same engine as the REPL.

gdb's software (Z0) and hardware (Z1) breakpoints both become engine breakpoints at a guest
linear address (`Debugger.break_at`): the silicon's stop hooks (hw/debugtrap.py), the trap
mechanism exits use, so no int3 is ever written into guest memory and gdb reads the guest's own
bytes.  A step is the engine's `stepi` (an instruction count of 1).  Any other engine stop
(a kvmsim breakpoint on an exit, a port, a kernel function...) reaches gdb as a SIGTRAP stop with
the engine's description on gdb's console.

The x87 and SSE registers are read from the CPU as they are (unicorn's FPU state); only the
general, segment and base registers can be written (as the REPL's `set reg`).
"""

from __future__ import annotations

from typing import Callable

from unicorn import UcError
from unicorn import x86_const as U

from kvmsim.debug.breakpoints import DebugError
from kvmsim.debug.engine import GPRS, SEGS, Debugger, Stop
from kvmsim.debug.gdbstub import TargetStop
from kvmsim.hw.vmcs import exit_reason_name

# gdbregs source names read straight from the CPU's FPU/SSE state (unicorn register ids).
_FPU_IDS = {**{f"st{i}": getattr(U, f"UC_X86_REG_FP{i}") for i in range(8)},
            "fctrl": U.UC_X86_REG_FPCW, "fstat": U.UC_X86_REG_FPSW, "ftag": U.UC_X86_REG_FPTAG,
            "fiseg": U.UC_X86_REG_FCS, "fioff": U.UC_X86_REG_FIP, "foseg": U.UC_X86_REG_FDS,
            "fooff": U.UC_X86_REG_FDP, "fop": U.UC_X86_REG_FOP, "mxcsr": U.UC_X86_REG_MXCSR,
            **{f"xmm{i}": getattr(U, f"UC_X86_REG_XMM{i}") for i in range(16)}}
_WRITABLE = frozenset(GPRS + SEGS + ("fs_base", "gs_base"))
PAGE = 0x1000


class DebuggerTarget:
    """Target (gdbstub.py) for one Debugger; `command` runs a REPL command line for `monitor`."""

    def __init__(self, dbg: Debugger, command: Callable[[str], str] | None = None) -> None:
        self.dbg = dbg
        self.command = command or (lambda line: fallback_command(dbg, line))
        self._bps: dict[tuple[str, int], int] = {}     # gdb's (kind, address) -> engine number
        if dbg.current is None:
            dbg.start()

    def mode(self) -> str:
        return self.dbg.mode()

    # ------------------------------------------------------------ registers
    def read_reg(self, name: str) -> int | None:
        if name in _FPU_IDS:
            try:
                v = self.dbg.hw.uc.reg_read(_FPU_IDS[name])
            except (UcError, AttributeError):
                return None
            if isinstance(v, tuple):                    # st0-7: (mantissa, sign and exponent)
                v = v[0] | (v[1] << 64)
            return v
        try:
            return self.dbg.get_reg(name)
        except DebugError:
            return None

    def write_reg(self, name: str, value: int) -> bool:
        if name not in _WRITABLE:
            return False
        try:
            self.dbg.set_reg(name, value)
        except DebugError:
            return False
        return True

    # ------------------------------------------------------------ memory
    def read_mem(self, addr: int, size: int) -> bytes:
        """The readable prefix of [addr, addr + size), page by page."""
        out = bytearray()
        while size > 0:
            chunk = min(size, PAGE - (addr & (PAGE - 1)))
            try:
                out += self.dbg.read_memory(addr & (1 << 64) - 1, chunk)
            except DebugError:
                break
            addr, size = addr + chunk, size - chunk
        return bytes(out)

    def write_mem(self, addr: int, data: bytes) -> bool:
        try:
            self.dbg.write_memory(addr, data)
        except DebugError:
            return False
        return True

    # ------------------------------------------------------------ breakpoints
    def insert_break(self, kind: str, addr: int) -> bool:
        if (kind, addr) in self._bps:
            return True
        try:
            self._bps[(kind, addr)] = self.dbg.break_at(addr).number
        except DebugError:
            return False
        return True

    def remove_break(self, kind: str, addr: int) -> bool:
        n = self._bps.pop((kind, addr), None)
        if n is None:
            return False
        try:
            self.dbg.delete(n)
        except DebugError:
            pass
        return True

    # ------------------------------------------------------------ running
    def resume(self, step: bool) -> TargetStop:
        if self.dbg.current is not None and not self.dbg.current.running:
            return self._to_target(self.dbg.current)
        try:
            stop = self.dbg.stepi() if step else self.dbg.cont()
        except DebugError as e:
            return TargetStop("ended", str(e))
        return self._to_target(stop)

    def _to_target(self, stop: Stop) -> TargetStop:
        if not stop.running:
            res = stop.result
            code = res.stop.code if res is not None and res.stop.code is not None else 0
            return TargetStop("ended", stop.text, code)
        if stop.kind == "breakpoint":
            ours = {n: k for (k, _a), n in self._bps.items()}
            for n in stop.breakpoints:
                if n in ours:
                    return TargetStop("sw-break" if ours[n] == "sw" else "hw-break", stop.text)
            return TargetStop("exit-break", stop.text)
        if stop.kind == "step":
            return TargetStop("step", stop.text)
        if stop.kind == "interrupt":
            return TargetStop("interrupt", stop.text)
        return TargetStop("exit-break", stop.text)    # a stage, `until`: an engine stop

    def interrupt(self) -> None:
        # The engine's second interrupt stops the guest where it is (the first waits for an exit).
        self.dbg.interrupt()
        self.dbg.interrupt()

    def monitor(self, command: str) -> str:
        try:
            return self.command(command)
        except DebugError as e:
            return f"error: {e}"

    def kill(self) -> None:
        self.dbg.close()

    def detach(self) -> None:
        """gdb leaves: every breakpoint goes, and the run goes on to the end (as after QEMU's `D`)."""
        self._bps.clear()
        try:
            self.dbg.delete(None)
            while self.dbg.current is not None and self.dbg.current.running:
                self.dbg.cont()
        except DebugError:
            pass


def fallback_command(dbg: Debugger, line: str) -> str:
    """`monitor` commands while no REPL interpreter is plugged in: the few the stub needs."""
    words = line.split()
    if not words:
        return ""
    cmd, rest = words[0], line[len(words[0]):].strip()
    try:
        from kvmsim.debug import views   # here, not at the top: views load the KVM model, `kvmsim --help` this module
    except ImportError:                                  # pragma: no cover - views come with the REPL
        views = None
    if cmd in ("break", "b", "tbreak"):
        bp = dbg.add_breakpoint(rest, temporary=cmd == "tbreak")
        return f"Breakpoint {bp.number}: {rest}"
    if cmd in ("delete", "d"):
        dbg.delete(int(rest) if rest else None)
        return ""
    if cmd == "vmcs":
        if views is not None:
            return "\n".join(views.vmcs(dbg))
        v = dbg.hw.vmcs
        return "\n".join(f"{name:<24} {val}" for name, val in (
            ("VM_EXIT_REASON", exit_reason_name(v.vm_exit_reason)),
            ("EXIT_QUALIFICATION", f"{v.exit_qualification:#x}"),
            ("VM_EXIT_INSTRUCTION_LEN", v.vm_exit_instruction_len),
            ("VM_EXIT_INTR_INFO", f"{v.vm_exit_intr_info:#x}"),
            ("GUEST_PHYSICAL_ADDRESS", f"{v.guest_physical_address:#x}"),
            ("GUEST_LINEAR_ADDRESS", f"{v.guest_linear_address:#x}")))
    if cmd == "bt":
        if views is not None:
            return "\n".join(views.bt(dbg))
        ev = dbg.current.event if dbg.current is not None else None
        stack = list(reversed(ev.stack + ((ev.name,) if ev.kind == "call" else ()))) if ev else []
        lines = [f"#{i} {name}" for i, name in enumerate(stack)]
        return "\n".join(lines + [f"#{len(lines)} guest {dbg.symbolize(dbg.hw.linear_rip())}"])
    if cmd == "exit":
        cur = dbg.current
        v = dbg.hw.vmcs
        return (f"{cur.text if cur else ''}\nlast VM exit: {exit_reason_name(v.vm_exit_reason)} "
                f"qualification={v.exit_qualification:#x} instruction_len={v.vm_exit_instruction_len}")
    if line.startswith("info break") and views is not None:
        return "\n".join(views.info_break(dbg))
    raise DebugError(f"unknown monitor command {cmd!r} (the REPL's commands come with kvmsim debug)")
