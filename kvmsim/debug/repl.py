"""`kvmsim debug`: the command prompt over the engine (standard `cmd`: readline history, completion, help).

Every command prints what it has to say and returns; a bad command or argument prints one line
(`error: ...`) and the session goes on.  Ctrl-C at the prompt cancels the line; while the guest
runs it stops at the next VM exit (twice: where the guest is).  `-x FILE` feeds commands from a
file, echoing each after the prompt as a person would see it; `--batch` ends when the file does.
"""

from __future__ import annotations

import cmd
import os
import shlex
import sys
from pathlib import Path
from typing import IO, Any, Callable

from kvmsim.debug import views
from kvmsim.errors import BackendError
from kvmsim.debug.breakpoints import KINDS, DebugError, kfunc_names, parse_int, split_condition
from kvmsim.debug.engine import REG_NAMES, Debugger, Stop
from kvmsim.hw.vmcs import ExitReason
from kvmsim.kvm import x86
from kvmsim.kvm.emulate.codes import EmulType
from kvmsim.uapi import KvmExit

PROMPT = "(kvmsim) "
HISTORY = Path(os.environ.get("KVMSIM_DEBUG_HISTORY", Path.home() / ".kvmsim_debug_history"))


class DebugShell(cmd.Cmd):
    """The kvmsim debugger.  `help COMMAND` explains each command; TAB completes."""

    prompt = PROMPT
    intro = "kvmsim debugger: `help` lists the commands, `c` runs to the next breakpoint, `q` quits."

    def __init__(self, dbg: Debugger, stdout: IO[str] | None = None) -> None:
        super().__init__(stdout=stdout or sys.stdout)
        self.dbg = dbg
        self.done = False

    # ------------------------------------------------------------------ plumbing
    def out(self, *lines: str) -> None:
        for line in lines:
            self.stdout.write(line + "\n")
        self.stdout.flush()

    def onecmd(self, line: str) -> bool:
        try:
            return bool(super().onecmd(line))
        except DebugError as e:
            self.out(f"error: {e}")
        except KeyboardInterrupt:
            self.out("^C")
        except Exception as e:      # never a traceback: the session lives on
            self.out(f"error: {type(e).__name__}: {e}")
        return False

    def emptyline(self) -> bool:
        return False                # (gdb repeats; repeating a motion by accident is worse)

    def default(self, line: str) -> bool:
        self.out(f"error: unknown command {line.split()[0]!r} (`help` lists the commands)")
        return False

    def postcmd(self, stop: bool, line: str) -> bool:
        return stop or self.done

    def show_stop(self, stop: Stop) -> None:
        self.out(stop.text)
        if stop.kind in ("step", "interrupt") or (stop.kind == "breakpoint" and stop.event is None):
            self.out(*views.disas(self.dbg, None, 1))
        if stop.kind == "end" and stop.result is not None:
            r = stop.result
            self.out(f"exits: {', '.join(f'{k} {v}' for k, v in sorted(r.exits.items())) or 'none'}")
        if stop.running:
            for i, expr in enumerate(self.dbg.displays, 1):
                self.out(f"{i}: {expr} = {self._display_value(expr)}")

    def _display_value(self, expr: str) -> str:
        view = _VIEWS.get(expr)
        try:
            if view is not None:
                return "\n  " + "\n  ".join(view(self.dbg))
            return _fmt_value(self.dbg.evaluate(expr, self.dbg.current.event if self.dbg.current else None))
        except DebugError as e:
            return f"<error: {e}>"

    def _motion(self, how: str, arg: Any = None) -> None:
        cur = self.dbg.current
        if cur is not None and not cur.running:
            raise DebugError("the run has ended (`run` starts it again, `q` quits)")
        self.show_stop(self.dbg.resume(how, arg))

    # ------------------------------------------------------------------ motion
    def do_continue(self, arg: str) -> None:
        """continue (c): run to the next breakpoint or the end of the run."""
        self._motion("continue")

    do_c = do_continue

    def do_next(self, arg: str) -> None:
        """next (n): run to the next VM exit."""
        self._motion("next")

    do_n = do_next

    def do_step(self, arg: str) -> None:
        """step (s): to the next stage of the current exit: vm-exit, exit-handler, emulator-decode,
        emulator-execute, userspace-exit, complete-userspace-io, vm-entry."""
        self._motion("step")

    do_s = do_step

    def do_stepi(self, arg: str) -> None:
        """stepi (si): one guest instruction, natively (an instruction that exits completes through KVM)."""
        self._motion("stepi")

    do_si = do_stepi

    def do_finish(self, arg: str) -> None:
        """finish: run to this exit's VM entry."""
        self._motion("finish")

    def do_until(self, arg: str) -> None:
        """until EXPR: run to the first exit stage where the Python expression is true
        (names: vcpu, run, ctxt, regs, vmcs, hw, ev, fields, mode, rip, rax, rbx, rcx, rdx)."""
        self._motion("until", arg)

    def do_run(self, arg: str) -> None:
        """run (restart): start the scenario again from the beginning; breakpoints are kept."""
        self.show_stop(self.dbg.restart())

    do_restart = do_run

    def do_quit(self, arg: str) -> bool:
        """quit (q): end the session."""
        self.done = True
        return True

    do_q = do_quit
    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        """Ctrl-D: end the session."""
        self.out("")
        return self.do_quit(arg)

    # ------------------------------------------------------------------ breakpoints
    def do_break(self, arg: str, temporary: bool = False) -> None:
        """break (b) SPEC [if COND]: stop at
          exit REASON          a VM exit (IO_INSTRUCTION, EPT_VIOLATION, or its number)
          port LO[-HI]         an I/O exit on a port in the range
          gpa LO[-HI]          an EPT violation/misconfig at a guest-physical address in the range
          userspace KIND       a return to userspace: mmio, io, hlt, x86_rdmsr, ...
          emultype BITS        x86_emulate_instruction with these EMULTYPE bits (NO_DECODE|PF)
          func NAME            a modelled kernel function being called
          tp NAME              a tracepoint (kvm_exit, kvm_mmio, kvm_pio, kvm_entry, ...)
          rip ADDR | *ADDR | SYMBOL   the guest reaching that linear address
        COND is a Python expression over vcpu, run, ctxt, regs (e.g. regs.rax == 1)."""
        spec, cond = split_condition(arg)
        bp = self.dbg.add_breakpoint(spec, cond, temporary)
        self.out(f"{'Temporary b' if temporary else 'B'}reakpoint {bp.number}: {bp.kind} {bp.spec}"
                 + (f" if {cond}" if cond else ""))

    do_b = do_break

    def do_tbreak(self, arg: str) -> None:
        """tbreak SPEC [if COND]: a breakpoint deleted when it first stops (see `help break`)."""
        self.do_break(arg, temporary=True)

    def do_delete(self, arg: str) -> None:
        """delete [N]: delete breakpoint N (all without N)."""
        self.dbg.delete(parse_int(arg) if arg.strip() else None)

    def do_disable(self, arg: str) -> None:
        """disable N: breakpoint N stays but does not stop."""
        self.dbg.enable(_num(arg), False)

    def do_enable(self, arg: str) -> None:
        """enable N: breakpoint N stops again."""
        self.dbg.enable(_num(arg), True)

    def do_condition(self, arg: str) -> None:
        """condition N [EXPR]: breakpoint N stops only when EXPR is true (no EXPR: always)."""
        n, _, expr = arg.strip().partition(" ")
        self.dbg.condition(_num(n), expr.strip() or None)

    def do_ignore(self, arg: str) -> None:
        """ignore N COUNT: the next COUNT hits of breakpoint N do not stop."""
        parts = arg.split()
        if len(parts) != 2:
            raise DebugError("usage: ignore N COUNT")
        self.dbg.ignore(_num(parts[0]), parse_int(parts[1]))

    def do_info(self, arg: str) -> None:
        """info break | exits | registers | display: breakpoints with hit counts, exit counts so far,
        the registers, the display list."""
        what = arg.strip()
        if what in ("break", "breakpoints", "b"):
            self.out(*views.info_break(self.dbg))
        elif what == "exits":
            self.out(*views.info_exits(self.dbg))
        elif what in ("registers", "regs", "r"):
            self.out(*views.regs(self.dbg))
        elif what == "display":
            self.out(*[f"{i}: {e}" for i, e in enumerate(self.dbg.displays, 1)] or ["no displays"])
        else:
            raise DebugError("info break | exits | registers | display")

    # ------------------------------------------------------------------ views
    def do_regs(self, arg: str) -> None:
        """regs: general registers, RIP with its guest symbol, RFLAGS by name, mode and CPL."""
        self.out(*views.regs(self.dbg))

    def do_sregs(self, arg: str) -> None:
        """sregs: segment descriptor caches, GDT/IDT, control registers and EFER by bit name."""
        self.out(*views.sregs(self.dbg))

    def do_vmcs(self, arg: str) -> None:
        """vmcs: exit reason, exit qualification decoded into named fields, instruction length,
        interruption info, GPA and linear address, the execution controls."""
        self.out(*views.vmcs(self.dbg))

    def do_kvm_run(self, arg: str) -> None:
        """kvm_run: struct kvm_run with the current exit's union decoded.
        kvm_run set FIELD VALUE: change a field (mmio.data HEX, io.data HEX, or any numeric field);
        at a userspace exit it lands when the VMM calls KVM_RUN again, after its own answer."""
        parts = arg.split()
        if not parts:
            self.out(*views.kvm_run(self.dbg))
            return
        if parts[0] != "set" or len(parts) != 3:
            raise DebugError("usage: kvm_run [set FIELD VALUE]")
        name, text = parts[1], parts[2]
        value: int | bytes = _hex_bytes(text) if name.endswith("data") else parse_int(text)
        self.out(f"kvm_run {name}: {self.dbg.kvm_run_set(name, value)}")

    def do_ctxt(self, arg: str) -> None:
        """ctxt: the emulator's decoded context: opcode and its flags by name, operands with types and
        values, prefixes, REP state, read cache, MMIO fragments."""
        self.out(*views.ctxt(self.dbg))

    def do_bt(self, arg: str) -> None:
        """bt: the simulated kernel stack, innermost first, and the guest frame with its symbol."""
        self.out(*views.bt(self.dbg))

    do_backtrace = do_bt
    do_where = do_bt

    def do_x(self, arg: str) -> None:
        """x/FMT ADDR: guest memory.  FMT = [count][x|d|u|c|s|i][b|h|w|g][p]: count, format (hex,
        signed, unsigned, char, string, instructions), unit size (1 2 4 8 bytes).  ADDR is a guest
        linear address through the guest's page tables; with p a guest-physical address.
        ADDR may be a number, a guest symbol, a register or an expression."""
        a = arg.strip()
        fmt, addr = "", a
        if a.startswith("/"):
            fmt, _, addr = a[1:].partition(" ")
        self.out(*views.examine(self.dbg, fmt, addr))

    def do_disas(self, arg: str) -> None:
        """disas [ADDR [N]]: N instructions (default 8) from ADDR (default RIP) with guest symbols;
        => marks RIP."""
        parts = arg.split()
        addr = views.dbg_address(self.dbg, parts[0]) if parts else None
        n = parse_int(parts[1]) if len(parts) > 1 else 8
        self.out(*views.disas(self.dbg, addr, n))

    def do_trace(self, arg: str) -> None:
        """trace [N]: the last N probe events (default 20): tracepoints and kernel calls/returns."""
        self.out(*views.trace(self.dbg, parse_int(arg) if arg.strip() else 20))

    def do_display(self, arg: str) -> None:
        """display EXPR: show EXPR (a Python expression, or a view: regs vmcs kvm_run ctxt bt) at each stop.
        display alone shows the list; undisplay N removes one."""
        if not arg.strip():
            self.do_info("display")
            return
        self.dbg.displays.append(arg.strip())
        self.out(f"{len(self.dbg.displays)}: {arg.strip()} = {self._display_value(arg.strip())}")

    def do_undisplay(self, arg: str) -> None:
        """undisplay N: stop showing display N."""
        n = _num(arg)
        if not 1 <= n <= len(self.dbg.displays):
            raise DebugError(f"no display {n}")
        del self.dbg.displays[n - 1]

    def do_print(self, arg: str) -> None:
        """print (p) EXPR: evaluate a Python expression over vcpu, run, ctxt, regs, vmcs, hw, ev, fields."""
        cur = self.dbg.current
        self.out(_fmt_value(self.dbg.evaluate(arg, cur.event if cur else None)))

    do_p = do_print

    def do_device(self, arg: str) -> None:
        """device NAME: a device model's state (counters, registers, serial text)."""
        self.out(*views.device(self.dbg, arg.strip()))

    # ------------------------------------------------------------------ actions
    def do_set(self, arg: str) -> None:
        """set reg NAME VALUE: write a register (GPRs, rip, rflags, segment selectors, fs_base, gs_base,
        cr0 cr2 cr3 cr4 cr8, efer) as userspace would.
        set mem [/p] ADDR HEX: write bytes at a guest linear address (/p: a guest-physical one)."""
        parts = arg.split()
        if len(parts) >= 3 and parts[0] == "reg":
            value = views.dbg_address(self.dbg, " ".join(parts[2:]))
            self.dbg.set_reg(parts[1], value)
            self.out(f"{parts[1]} = {value:#x}")
        elif len(parts) >= 3 and parts[0] == "mem":
            physical = parts[1] == "/p"
            rest = parts[2:] if physical else parts[1:]
            if len(rest) < 2:
                raise DebugError("usage: set mem [/p] ADDR HEX")
            addr = views.dbg_address(self.dbg, rest[0])
            data = _hex_bytes("".join(rest[1:]))
            self.dbg.write_memory(addr, data, physical)
            self.out(f"wrote {len(data)} bytes at {'gpa ' if physical else ''}{addr:#x}")
        else:
            raise DebugError("usage: set reg NAME VALUE | set mem [/p] ADDR HEX")

    def do_inject(self, arg: str) -> None:
        """inject nmi | irq N | exception N [ERR]: what userspace or KVM would make pending for the
        next VM entry (KVM_NMI, KVM_INTERRUPT, kvm_queue_exception[_e])."""
        parts = arg.split()
        kv = self.dbg.kvcpu
        fd = self.dbg.machine.vcpu
        if True:
            if parts == ["nmi"]:
                fd.nmi()
            elif len(parts) == 2 and parts[0] == "irq":
                try:
                    fd.interrupt(parse_int(parts[1]) & 0xFF)
                except BackendError as e:           # KVM_INTERRUPT with an in-kernel irqchip: ENXIO
                    raise DebugError(str(e)) from None
            elif len(parts) in (2, 3) and parts[0] == "exception":
                vec = parse_int(parts[1])
                if not 0 <= vec < 32:
                    raise DebugError("an exception vector is 0-31")
                if len(parts) == 3:
                    x86.kvm_queue_exception_e(kv, vec, parse_int(parts[2]))
                else:
                    x86.kvm_queue_exception(kv, vec)
            else:
                raise DebugError("usage: inject nmi | irq N | exception N [ERR]")
        self.out(f"queued {arg.strip()} for the next VM entry")

    # ------------------------------------------------------------------ completion
    def complete_break(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if len(words) <= 1:
            syms = list(self.dbg.image.symbols)
            return [w for w in list(KINDS) + syms if w.startswith(text)]
        kind = words[1]
        if kind == "func":
            return sorted(n for n in kfunc_names() if n.startswith(text))
        if kind == "exit":
            return [n for n in ExitReason.__members__ if n.startswith(text.upper())]
        if kind == "userspace":
            return [n.lower() for n in KvmExit.__members__ if n.lower().startswith(text.lower())]
        if kind == "emultype":
            return [n for n in EmulType.__members__ if n.startswith(text.upper())]
        if kind == "tp":
            tps = ["kvm_exit", "kvm_entry", "kvm_userspace_exit", "kvm_mmio", "kvm_pio", "kvm_emulate_insn",
                   "kvm_page_fault", "kvm_fast_mmio", "kvm_msr", "kvm_cr", "kvm_cpuid", "kvm_hypercall",
                   "kvm_inj_exception", "kvm_inj_virq"]
            return [n for n in tps if n.startswith(text)]
        if kind == "rip":
            return [s for s in self.dbg.image.symbols if s.startswith(text)]
        return []

    complete_b = complete_tbreak = complete_break

    def complete_info(self, text: str, *_: Any) -> list[str]:
        return [w for w in ("break", "exits", "registers", "display") if w.startswith(text)]

    def complete_set(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if len(words) <= 1:
            return [w for w in ("reg", "mem") if w.startswith(text)]
        if words[1] == "reg" and len(words) == 2:
            return [r for r in REG_NAMES if r.startswith(text)]
        return []

    def complete_inject(self, text: str, *_: Any) -> list[str]:
        return [w for w in ("nmi", "irq", "exception") if w.startswith(text)]

    def complete_device(self, text: str, *_: Any) -> list[str]:
        return [d for d in self.dbg.machine.devices if d.startswith(text)]

    def complete_kvm_run(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if len(words) <= 1:
            return ["set"] if "set".startswith(text) else []
        if len(words) == 2:
            return [f for f in ("mmio.data", "io.data", "immediate_exit", "request_interrupt_window")
                    if f.startswith(text)]
        return []


_VIEWS: dict[str, Callable[[Debugger], list[str]]] = {
    "regs": views.regs, "sregs": views.sregs, "vmcs": views.vmcs, "kvm_run": views.kvm_run, "ctxt": views.ctxt,
    "bt": views.bt}


def _num(text: str) -> int:
    if not text.strip():
        raise DebugError("a breakpoint number is needed")
    return parse_int(text.strip())


def _hex_bytes(text: str) -> bytes:
    t = text.replace(" ", "").removeprefix("0x")
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise DebugError(f"not hex bytes: {text!r} (e.g. 78563412)") from None


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:#x} ({v})"
    return repr(v)


# ---------------------------------------------------------------- entry point

def run_shell(dbg: Debugger, script: str | None = None, batch: bool = False, stdin: IO[str] | None = None,
              stdout: IO[str] | None = None) -> int:
    """Run a session: the script's commands first (echoed), then the prompt unless batch."""
    sh = DebugShell(dbg, stdout)
    sh.show_stop(dbg.start())
    try:
        if script is not None:
            try:
                lines = Path(script).read_text().splitlines()
            except OSError as e:
                sh.out(f"error: cannot read {script}: {e.strerror}")
                return 2
            for line in lines:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                sh.out(PROMPT + line)
                if sh.onecmd(line) or sh.done:
                    return 0
            if batch:
                return 0
        _interactive(sh, stdin)
        return 0
    finally:
        dbg.close()


def _interactive(sh: DebugShell, stdin: IO[str] | None) -> None:
    tty = stdin is None and sys.stdin.isatty()
    if stdin is not None:
        sh.stdin, sh.use_rawinput = stdin, False
    elif not tty:
        sh.use_rawinput = False
        sh.prompt = ""          # commands from a pipe: no prompts in the output
    rl = _readline() if tty else None
    try:
        while not sh.done:
            try:
                sh.cmdloop(sh.intro if tty else None)
                break
            except KeyboardInterrupt:          # Ctrl-C at the prompt: a fresh line, same session
                sh.out("^C")
                sh.intro = None
    finally:
        if rl is not None:
            try:
                rl.write_history_file(str(HISTORY))
            except OSError:
                pass


def _readline() -> Any:
    try:
        import readline
    except ImportError:
        return None
    try:
        readline.read_history_file(str(HISTORY))
    except OSError:
        pass
    readline.set_history_length(1000)
    readline.set_completer_delims(" \t\n")
    return readline


def split_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as e:
        raise DebugError(str(e)) from None
