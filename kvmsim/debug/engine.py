"""The debugger engine: run a scenario and stop where asked, at exits, kernel stages or guest code.

Like pdb inside bdb's trace callback, a stop is a subscriber that does not return until the user
resumes.  The simulation runs on its own thread; the engine subscribes to the one probe stream
(probe.py) and, for guest code, to the silicon's debug stops (hw/debugtrap.py: the trap
mechanism exits use).  At a stop the simulation thread hands a `Stop` to the caller and waits;
exactly one of the two threads runs at any time, so a run under the debugger is deterministic and
gives the same trace and result as the run without it.

Engine API (front ends — the REPL, the gdb stub, notebooks — use only this):

    dbg = Debugger(scenario)              # builds the VM (sim backend); nothing runs yet
    stop = dbg.start()                    # Stop(kind="start") before the first KVM_RUN
    for stop in dbg.stops(): ...          # generator: each stop; resumes with `continue` unless
                                          # the loop body called a motion method itself
  Motion (each returns the next Stop; kind "end" carries the RunResult, "error" the text):
    dbg.cont()            to the next breakpoint or the end
    dbg.next()            to the next VM exit (tracepoint kvm_exit)
    dbg.step()            to the next stage of the exit (STAGES)
    dbg.stepi()           one guest instruction, natively (count = 1 in the engine); an
                          instruction that exits completes through KVM first.  From a stop at
                          an exit stage: to the instruction boundary where the guest resumes
    dbg.finish()          to this exit's VM entry
    dbg.until(expr)       to the first stage where the Python expression is true
    dbg.resume(how, arg)  the same by name: "continue" "next" "step" "stepi" "finish" "until"
    dbg.interrupt()       from another thread (Ctrl-C): stop at the next VM exit; a second call
                          stops the running guest where it is
    dbg.restart() -> Stop a fresh VM, breakpoints kept;  dbg.close(): end the run, free the VM
  Breakpoints (numbers as gdb; kinds in breakpoints.py):
    dbg.add_breakpoint("exit EPT_VIOLATION" | "port 0x3f8-0x3ff" | "gpa LO[-HI]" |
        "userspace mmio" | "emultype NO_DECODE|PF" | "func complete_emulated_mmio" |
        "tp kvm_mmio" | "rip 0x1000" | "*0x1000" | "SYMBOL", condition=None, temporary=False)
        -> Breakpoint;  dbg.break_at(linear) -> Breakpoint (guest code; the gdb stub's Z0/Z1)
    dbg.delete(n) dbg.enable(n, on) dbg.ignore(n, count) dbg.condition(n, expr)
    dbg.breakpoints: dict[int, Breakpoint]  (hits, enabled, ignore_count, condition, temporary)
  Guest state (valid at a stop):
    dbg.mode() -> "real" | "vm86" | "prot16" | "prot32" | "compat" | "long64"
    dbg.get_reg(name) / dbg.set_reg(name, value): GPRs, rip, rflags, eflags, cs ds es fs gs ss
        (selectors), fs_base gs_base, cr0 cr2 cr3 cr4 cr8, efer (REG_NAMES)
    dbg.registers() -> dict of all of them
    dbg.read_memory(addr, size, physical=False) / dbg.write_memory(addr, data, physical=False):
        guest linear address through the guest's page tables, or GPA (DebugError if unmapped)
    dbg.translate(linear) -> GPA
    dbg.symbol(name) -> linear | None;  dbg.symbolize(addr) -> "name+0x4"
  Current stop: dbg.current (Stop), dbg.exit_counts (VM exits by reason so far), dbg.trace (recent
  probe events, recorded while the engine watches the probe stream: see wants_probes)
  Objects behind the views: dbg.machine (runner.Machine), dbg.kvcpu (KvmVcpu), dbg.hw (silicon)
  Any REPL command from another front end (gdb's `monitor`): repl.DebugShell(dbg, stdout=buf).onecmd(line)
  Threads: the simulation runs on its own thread; call the engine from one controlling thread.

DebugError is the one exception front ends catch for bad arguments and states.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any, Iterator

from kvmsim import probe
from kvmsim.debug.breakpoints import Breakpoint, BreakpointTable, DebugError, parse_spec
from kvmsim.hw import paging
from kvmsim.kvm.trace import format_event
from kvmsim.probe import PROBES, Event

# The stages of one exit, in the order KVM goes through them, and the probe event of each.
STAGES = ("vm-exit", "exit-handler", "emulator-decode", "emulator-execute", "userspace-exit",
          "complete-userspace-io", "vm-entry")
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
        "r14", "r15", "rip", "rflags")
SEGS = ("cs", "ss", "ds", "es", "fs", "gs")
CTRL = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")
REG_NAMES = GPRS + SEGS + ("fs_base", "gs_base") + CTRL
TRACE_KEEP = 10_000


def stage_of(ev: Event) -> str | None:
    """Which stage of an exit a probe event is (None: not a stage boundary)."""
    if ev.kind == "tp":
        return {"kvm_exit": "vm-exit", "kvm_userspace_exit": "userspace-exit",
                "kvm_entry": "vm-entry"}.get(ev.name)
    if ev.kind != "call":
        return None
    if ev.name == "x86_decode_insn":
        return "emulator-decode"
    if ev.name == "x86_emulate_insn":
        return "emulator-execute"
    caller = ev.stack[-1] if ev.stack else ""
    if caller == "vmx_handle_exit":
        return "exit-handler"
    if caller == "kvm_arch_vcpu_ioctl_run" and ev.name.startswith("complete_"):
        return "complete-userspace-io"
    return None


@dataclass
class Stop:
    """Why and where the run stopped."""

    kind: str                      # start breakpoint stage step interrupt until end error
    stage: str | None = None       # STAGES member when stopped at a probe event
    event: Event | None = None
    rip: int = 0                   # guest linear RIP
    breakpoints: tuple[int, ...] = ()
    text: str = ""
    result: Any = None             # RunResult at kind "end"

    @property
    def running(self) -> bool:
        return self.kind not in ("end", "error")


class _Killed(BaseException):
    """Raised on the simulation thread to end the run (quit, restart)."""


@dataclass
class _Motion:
    how: str = "continue"
    arg: Any = None
    depth: int = 0


@dataclass
class _Pending:
    run_sets: list[tuple[str, int | bytes]] = field(default_factory=list)


class Debugger:
    """One scenario under the debugger (see the module docstring for the API)."""

    def __init__(self, scenario: Any, image: Any = None, watch_always: bool = False) -> None:
        self.scenario = scenario
        self.watch_always = watch_always     # record the whole probe stream (trace) even when nothing stops
        self._image = image
        self.table = BreakpointTable()
        self.trace: deque[Event] = deque(maxlen=TRACE_KEEP)
        self.displays: list[str] = []
        self.current: Stop | None = None
        self.machine: Any = None
        self._thread: threading.Thread | None = None
        self._pinned = False
        self._build()

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        # here, not at the top: `kvmsim --help` imports this module; the runner loads the whole KVM model
        from kvmsim.scenario.runner import make_machine

        self.machine = m = make_machine(self.scenario, "sim", self._image)
        probe.pin(KVM_RUN_PATH)              # released by close()
        self._pinned = True
        self._image = m.image
        m.vmm.config.wall_seconds = 1e9      # the user's think time is no guest time
        m.vmm.kick = None
        ioctl_run = m.vcpu.run

        def run() -> int:                    # KVM_RUN as the VMM calls it: a point with no kernel frame
            self._at_kvm_run()
            return ioctl_run()
        m.vcpu.run = run
        self.kvcpu = m.vcpu.vcpu
        self.hw = self.kvcpu.hw
        self.hw.debug_stop = self._on_silicon_stop
        self.trace.clear()
        self._to_sim: queue.Queue = queue.Queue()
        self._to_ui: queue.Queue = queue.Queue()
        self._motion = _Motion()
        self._pending = _Pending()
        self._interrupts = 0
        self._in_silicon = False
        self._watching = False
        self._fix_stack = False
        self._sim_ident: int | None = None
        self.current = None
        self._started = False
        self._finished = False
        for bp in self.table.all():
            if bp.kind == "rip" and bp.enabled:
                self.hw.add_debug_breakpoint(bp.lo)

    @property
    def breakpoints(self) -> dict[int, Breakpoint]:
        return self.table.by_number

    @property
    def exit_counts(self) -> Counter[str]:
        """VM exits so far by reason (the vCPU's own statistics: counted whether watched or not)."""
        return Counter({k: v for k, v in self.kvcpu.stat.exits_by_reason.items() if v})

    @property
    def image(self) -> Any:
        return self.machine.image

    # ------------------------------------------------------------------ the simulation thread
    def _sim_main(self) -> None:
        self._sim_ident = threading.get_ident()
        first = self._to_sim.get()
        if first.how == "kill":
            return
        self._in_silicon = True         # before the first KVM_RUN the guest is at an instruction boundary
        try:
            self._apply(first)
        finally:
            self._in_silicon = False
        from kvmsim.scenario.runner import run_machine   # here, not at the top: `kvmsim --help` imports this module

        final: Stop | None
        try:
            res = run_machine(self.machine)
            final = Stop("end", rip=self._rip(), result=res, text=f"run ended: {res.stop.reason}"
                         + (f" {res.stop.code}" if res.stop.code is not None else "")
                         + (f" ({res.stop.detail})" if res.stop.detail else ""))
        except _Killed:
            final = None
        except Exception as e:      # a simulator bug: reported, the session lives on
            final = Stop("error", text=f"{type(e).__name__}: {e}")
        finally:
            self._unwatch()
        if final is not None:
            self._finished = True
            self._to_ui.put(final)

    # Watching the probe stream costs every modelled kernel function a wrapper and every tracepoint its
    # fields, so the engine subscribes only while something needs it: a breakpoint on an exit, a
    # stage, a function or a tracepoint, a motion through stages, a pending Ctrl-C.  Guest-code
    # breakpoints and stepi need no probes (silicon stop hooks).
    def wants_probes(self) -> bool:
        return (self.watch_always or self._interrupts > 0 or self._motion.how in ("next", "step", "finish", "until")
                or any(b.enabled and b.kind != "rip" for b in self.table.all()))

    def _at_kvm_run(self) -> None:
        """Before each KVM_RUN (no kernel frame is live): start or stop watching."""
        if self._pending.run_sets:
            self._apply_run_sets()      # kvm_run set at a userspace exit: after the VMM's answer
        if self.wants_probes():
            if not self._watching:
                self._watch()
        elif self._watching:
            self._unwatch()

    def _watch(self) -> None:
        """Subscribe.  Mid-KVM_RUN (from a stop in guest code) the kernel frames already live were
        entered unprobed: until this KVM_RUN ends, the stack is read from the Python frames."""
        mid = not PROBES.enabled and _kernel_chain() != []
        PROBES.subscribe(self._on_event)
        self._watching = True
        if mid:
            PROBES.stack[:] = _kernel_chain()
            self._fix_stack = True

    def _unwatch(self) -> None:
        if self._watching:
            PROBES.unsubscribe(self._on_event)
            self._watching = self._fix_stack = False

    def _on_event(self, ev: Event) -> None:
        """The probe subscriber: record, then stop here if a breakpoint or the motion says so."""
        if self._fix_stack and threading.get_ident() == self._sim_ident:
            chain = _kernel_chain()
            PROBES.stack[:] = chain
            ev.stack = tuple(chain[:-1] if ev.kind == "call" and chain and chain[-1] == ev.name else chain)
            if not chain:
                self._fix_stack = False
        self.trace.append(ev)
        if threading.get_ident() != self._sim_ident:
            return                  # a kernel function the user called at a stop (inject): no stop there
        stage = stage_of(ev)
        hits = self.table.match_event(ev, self)
        kind = None
        m = self._motion
        if hits:
            kind = "breakpoint"
        elif stage is not None:
            if self._interrupts and stage == "vm-exit":
                kind = "interrupt"
            elif m.how == "step":
                kind = "stage"
            elif m.how == "next" and stage == "vm-exit":
                kind = "stage"
            elif m.how == "finish" and stage == "vm-entry":
                kind = "stage"
            elif m.how == "until" and self._eval_until(m.arg, ev):
                kind = "until"
        if kind is not None:
            self._stop_here(Stop(kind, stage, ev, self._rip(), hits, self._describe(kind, stage, ev, hits)))

    def _on_silicon_stop(self, why: str, here: int) -> None:
        """The silicon stopped at an instruction boundary for us (hw/debugtrap.py)."""
        hits: tuple[int, ...] = ()
        if why == "breakpoint":
            hits = self.table.match_rip(here, self)
            if not hits:
                return              # a condition was false, or an ignore count ran
        if why == "interrupt" and self._interrupts == 1:
            if not self._watching:
                self._watch()       # the first Ctrl-C stops at the next VM exit
            return
        self._in_silicon = True
        try:
            kind = "breakpoint" if hits else why
            if why == "interrupt":
                self._interrupts = 0
            self._stop_here(Stop(kind, None, None, here, hits, self._describe(kind, None, None, hits, here)))
        finally:
            self._in_silicon = False

    def _stop_here(self, stop: Stop) -> None:
        self._interrupts = 0
        self.current = stop
        self._to_ui.put(stop)
        self._apply(self._to_sim.get())

    def _apply(self, m: _Motion) -> None:
        if m.how == "kill":
            raise _Killed()
        self._motion = m
        if self.wants_probes() and not self._watching:
            self._watch()
        self.hw.debug_cancel_step()
        if m.how == "stepi":
            self.hw.debug_single_step()
            if not self._in_silicon:
                self.hw._dbg_stepped = True    # stopped at an exit: the next instruction boundary

    # ------------------------------------------------------------------ the caller's side
    def start(self) -> Stop:
        """Start the simulation thread, stopped before the first KVM_RUN."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._sim_main, name="kvmsim-vcpu", daemon=True)
            self._thread.start()
            self.current = Stop("start", rip=self._rip(), text=f"stopped before the first KVM_RUN at "
                                                                 f"{self.symbolize(self._rip())}")
        return self.current

    def resume(self, how: str = "continue", arg: Any = None) -> Stop:
        """Resume the simulation thread and wait for its next stop."""
        if how not in ("continue", "next", "step", "stepi", "finish", "until"):
            raise DebugError(f"unknown motion {how!r}")
        if self._thread is None:
            self.start()
        if self.current is not None and not self.current.running:
            raise DebugError("the run has ended (run: restart it)")
        if how == "until":
            self._compile(arg)
        self._to_sim.put(_Motion(how, arg))
        stop = self._wait()
        self.current = stop
        return stop

    def _wait(self) -> Stop:
        while True:
            try:
                return self._to_ui.get()
            except KeyboardInterrupt:
                self.interrupt()

    def cont(self) -> Stop:
        return self.resume("continue")

    def next(self) -> Stop:
        return self.resume("next")

    def step(self) -> Stop:
        return self.resume("step")

    def stepi(self) -> Stop:
        return self.resume("stepi")

    def finish(self) -> Stop:
        return self.resume("finish")

    def until(self, expr: str) -> Stop:
        return self.resume("until", expr)

    def stops(self) -> Iterator[Stop]:
        """Each stop in turn; the loop body may call a motion method, else `continue` follows."""
        stop = self.start()
        while True:
            seen = stop
            yield stop
            if not self.current.running:
                return
            stop = self.current if self.current is not seen else self.cont()
            if not stop.running:
                yield stop
                return

    def interrupt(self) -> None:
        """Ctrl-C while running: stop at the next exit; asked again, stop the guest where it is."""
        self._interrupts += 1
        if self._interrupts > 1 or not self._watching:
            self.hw.debug_interrupt()     # (unwatched, the silicon stop starts watching: hw/debugtrap.py)

    def restart(self) -> Stop:
        self.close(release=True)
        self._build()
        self._thread = None
        return self.start()

    def close(self, release: bool = True) -> None:
        t = self._thread
        if t is not None and t.is_alive():
            self._to_sim.put(_Motion("kill"))
            t.join(timeout=10)
        self._thread = None
        if release and self.machine is not None:
            self.hw.debug_stop = None
            self.machine.close()
        if release and self._pinned:
            self._pinned = False
            probe.unpin(KVM_RUN_PATH)

    # ------------------------------------------------------------------ breakpoints
    def add_breakpoint(self, spec: str, condition: str | None = None, temporary: bool = False) -> Breakpoint:
        bp = parse_spec(spec, self)
        if condition:
            self._compile(condition)
        bp.condition, bp.temporary = condition or None, temporary
        self.table.add(bp)
        if bp.kind == "rip":
            self.hw.add_debug_breakpoint(bp.lo)
        return bp

    def break_at(self, linear: int, temporary: bool = False) -> Breakpoint:
        return self.add_breakpoint(f"rip {linear:#x}", temporary=temporary)

    def delete(self, number: int | None = None) -> None:
        for bp in self.table.remove(number):
            self._sync_rip(bp.lo if bp.kind == "rip" else None)

    def enable(self, number: int, on: bool = True) -> None:
        bp = self.table.get(number)
        bp.enabled = on
        self._sync_rip(bp.lo if bp.kind == "rip" else None)

    def ignore(self, number: int, count: int) -> None:
        self.table.get(number).ignore_count = max(0, count)

    def condition(self, number: int, expr: str | None) -> None:
        if expr:
            self._compile(expr)
        self.table.get(number).condition = expr or None

    def _sync_rip(self, addr: int | None) -> None:
        """The silicon keeps one hook per address any enabled rip breakpoint names."""
        if addr is None:
            return
        want = any(b.kind == "rip" and b.enabled and b.lo == addr for b in self.table.all())
        if want and addr not in self.hw.debug_breakpoints():
            self.hw.add_debug_breakpoint(addr)
        elif not want and addr in self.hw.debug_breakpoints():
            self.hw.remove_debug_breakpoint(addr)

    # ------------------------------------------------------------------ expressions
    def namespace(self, ev: Event | None = None) -> dict[str, Any]:
        """What conditions, `until`, `display` and `print` see: vcpu, run, ctxt, regs, ev, fields."""
        regs = _Regs(self)
        return {"vcpu": self.kvcpu, "run": self.kvcpu.run, "ctxt": self.kvcpu.arch.emulate_ctxt, "regs": regs,
                "hw": self.hw, "vmcs": self.hw.vmcs, "ev": ev, "fields": ev.fields if ev else {},
                "mode": self.mode(), **{n: getattr(regs, n) for n in ("rip", "rax", "rbx", "rcx", "rdx")}}

    def _compile(self, expr: Any) -> Any:
        if not isinstance(expr, str) or not expr.strip():
            raise DebugError("an expression is needed")
        try:
            return compile(expr, "<expr>", "eval")
        except SyntaxError as e:
            raise DebugError(f"bad expression {expr!r}: {e.msg}") from None

    def evaluate(self, expr: str, ev: Event | None = None) -> Any:
        try:
            return eval(self._compile(expr), {"__builtins__": __builtins__}, self.namespace(ev))
        except DebugError:
            raise
        except Exception as e:
            raise DebugError(f"{expr}: {type(e).__name__}: {e}") from None

    def _eval_until(self, expr: str, ev: Event) -> bool:
        try:
            return bool(self.evaluate(expr, ev))
        except DebugError:
            return True     # stop and let the user see the error

    # ------------------------------------------------------------------ guest state
    def mode(self) -> str:
        return self.hw.mode()

    def _rip(self) -> int:
        try:
            return self.hw.linear_rip()
        except Exception:
            return 0

    def get_reg(self, name: str) -> int:
        name = _alias(name)
        hw = self.hw
        if name in GPRS:
            return hw.reg(name)
        if name in SEGS:
            return hw.segment(name).selector
        if name in ("fs_base", "gs_base"):
            return hw.seg_base(name[:2])
        if name == "efer":
            return hw.efer()
        if name in CTRL:
            return hw.cr(int(name[2:]))
        raise DebugError(f"no register {name!r} (one of {' '.join(REG_NAMES)})")

    def registers(self) -> dict[str, int]:
        return {n: self.get_reg(n) for n in REG_NAMES}

    def set_reg(self, name: str, value: int) -> None:
        """Write a register as userspace would (KVM_SET_REGS / KVM_SET_SREGS on a stopped vCPU)."""
        # here, not at the top: `kvmsim --help` imports this module, and kvm/ loads the whole KVM model
        from kvmsim.kvm import x86

        name = _alias(name)
        if name not in REG_NAMES:
            raise DebugError(f"no register {name!r} (one of {' '.join(REG_NAMES)})")
        if name in GPRS:
            self.kvcpu.arch.emulate_regs_need_sync_from_vcpu = True
            self.hw.set_reg(name, value)
            return
        s = x86.kvm_arch_vcpu_ioctl_get_sregs(self.kvcpu)
        if name in SEGS:
            seg = getattr(s, name)
            seg.selector = value & 0xFFFF
            if self.mode() in ("real", "vm86"):
                seg.base = (value & 0xFFFF) << 4
        elif name in ("fs_base", "gs_base"):
            getattr(s, name[:2]).base = value
        else:
            setattr(s, name, value)
        try:
            x86.kvm_arch_vcpu_ioctl_set_sregs(self.kvcpu, s)
        except Exception as e:
            raise DebugError(f"set {name}: {e}") from None

    def translate(self, linear: int) -> int:
        try:
            return self.hw.walk(linear, False, False, False)
        except paging.PageFault as pf:
            raise DebugError(f"{linear:#x} is not mapped (page fault, error code {pf.error_code:#x})") from None

    def read_memory(self, addr: int, size: int, physical: bool = False) -> bytes:
        if size < 0 or size > 1 << 20:
            raise DebugError("size out of range")
        out = bytearray()
        while size:
            chunk = min(size, 0x1000 - (addr & 0xFFF))
            gpa = addr if physical else self.translate(addr)
            host = self.hw._host(gpa, chunk)
            if not host:
                raise DebugError(f"GPA {gpa:#x} is not guest RAM")
            import ctypes
            out += ctypes.string_at(host, chunk)
            addr, size = addr + chunk, size - chunk
        return bytes(out)

    def write_memory(self, addr: int, data: bytes, physical: bool = False) -> None:
        import ctypes
        while data:
            chunk = min(len(data), 0x1000 - (addr & 0xFFF))
            gpa = addr if physical else self.translate(addr)
            host = self.hw._host(gpa, chunk)
            if not host:
                raise DebugError(f"GPA {gpa:#x} is not guest RAM")
            ctypes.memmove(host, data[:chunk], chunk)
            self.hw.code_written(gpa, chunk)      # the CPU's code scans and translations follow
            addr, data = addr + chunk, data[chunk:]

    def symbol(self, name: str) -> int | None:
        return self.image.symbols.get(name)

    def symbolize(self, addr: int) -> str:
        s = self.image.symbolize(addr)
        return f"{addr:#x} <{s}>" if s and not s.startswith("0x") else f"{addr:#x}"

    # ------------------------------------------------------------------ kvm_run set
    def kvm_run_set(self, field_name: str, value: int | bytes) -> str:
        """Change a kvm_run field the VMM answers (an MMIO read's data, an IN's bytes): at a
        userspace exit the VMM has not answered yet, so the value lands when KVM_RUN is next
        called, after the VMM's answer (as if the VMM had answered it)."""
        _run_field(self.kvcpu, field_name)           # validates the name now
        if self.current is not None and self.current.stage == "userspace-exit":
            self._pending.run_sets.append((field_name, value))
            return "set when the VMM calls KVM_RUN again"
        _set_run_field(self.kvcpu, field_name, value)
        return "set"

    def _apply_run_sets(self) -> None:
        for name, value in self._pending.run_sets:
            _set_run_field(self.kvcpu, name, value)
        self._pending.run_sets.clear()

    # ------------------------------------------------------------------ descriptions
    def _describe(self, kind: str, stage: str | None, ev: Event | None, hits: tuple[int, ...],
                  here: int | None = None) -> str:
        where = self.symbolize(here if here is not None else self._rip())
        head = f"Breakpoint {', '.join(map(str, hits))}, " if hits else ""
        if ev is None:
            return f"{head}{ {'step': 'stepped to', 'interrupt': 'interrupted at'}.get(kind, 'guest at')} {where}"
        what = format_event(ev.name, ev.fields) if ev.kind == "tp" else None   # trace.h's TP_printk text
        label = f"[{stage}] " if stage else ""
        if ev.kind == "tp":
            return f"{head}{label}{ev.name}: {what}"
        args = ", ".join(_arg(k, v) for k, v in ev.fields.items())
        return f"{head}{label}{'' if ev.kind == 'call' else 'return from '}{ev.name}({args})" + \
            (f" = {ev.fields.get('ret')}" if ev.kind == "ret" else "") + f"  guest at {where}"


def _arg(name: str, v: Any) -> str:
    if name == "emulation_type" and isinstance(v, int):
        # here, not at the top: `kvmsim --help` imports this module, and kvm/ loads the whole KVM model
        from kvmsim.kvm.emulate.codes import EmulType
        names = "|".join(f.name for f in EmulType if f & v) or "0"
        return f"{name}={int(v):#x} ({names})"
    return f"{name}={v:#x}" if isinstance(v, int) and not isinstance(v, bool) else f"{name}={v}"


# The kfuncs live while guest code runs (KVM_RUN down to the VM entry): what the stack holds when
# the debugger starts watching from a stop in guest code.  Pinned for the session (probe.pin), so
# that each has a frame even where it is compiled.
KVM_RUN_PATH = ("kvm_arch_vcpu_ioctl_run", "vcpu_run", "vcpu_enter_guest", "vmx_vcpu_run")


def _kernel_chain() -> list[str]:
    """The modelled kernel functions live on this thread's Python stack, outermost first.

    A compiled kfunc (kvmsim/compiled/) has no frame: it is seen only when called through its
    probed twin, whose frame names it (those of KVM_RUN_PATH always, while a session lasts)."""
    codes = _kfunc_codes(len(probe._PROBED))
    twin = _twin_code()
    out = []
    f = sys._getframe(1)
    while f is not None:
        name = codes.get(f.f_code)
        if name is not None:
            out.append(name)
        elif f.f_code is twin:
            loc = f.f_locals
            if not isinstance(loc.get("fn"), FunctionType):   # a plain kfunc's own frame names it already
                out.append(loc.get("name", "?"))
        f = f.f_back
    out.reverse()
    return out


_CODES: dict[int, dict[Any, str]] = {}


def _kfunc_codes(n: int) -> dict[Any, str]:
    got = _CODES.get(n)
    if got is None:
        got = _CODES[n] = {f.__code__: getattr(f, "__kfunc__", f.__name__)
                           for f in probe._PROBED if isinstance(f, FunctionType)}
    return got


def _twin_code() -> Any:
    """The code of @kfunc's probed wrapper (one code object for every twin), None before any kfunc."""
    return next((t.__code__ for t in probe._PLAIN), None)


class _Regs:
    """regs.rax etc. in expressions (read when used)."""

    def __init__(self, dbg: Debugger) -> None:
        self._dbg = dbg

    def __getattr__(self, name: str) -> int:
        try:
            return self._dbg.get_reg(name)
        except DebugError as e:
            raise AttributeError(str(e)) from None

    def __getitem__(self, name: str) -> int:
        return self._dbg.get_reg(name)


def _alias(name: str) -> str:
    name = name.lower().lstrip("$%")
    return {"eflags": "rflags", "pc": "rip", "fsbase": "fs_base", "gsbase": "gs_base"}.get(name, name)


def _run_field(kvcpu: Any, name: str) -> tuple[Any, str]:
    """(object, attribute) of a dotted kvm_run field; io.data is the PIO data page."""
    if name == "io.data":
        return kvcpu, name
    obj: Any = kvcpu.run
    parts = name.split(".")
    for p in parts[:-1]:
        if not hasattr(obj, p) or p.startswith("_"):
            raise DebugError(f"kvm_run has no field {name!r}")
        obj = getattr(obj, p)
    if not hasattr(obj, parts[-1]) or parts[-1].startswith("_"):
        raise DebugError(f"kvm_run has no field {name!r}")
    return obj, parts[-1]


def _set_run_field(kvcpu: Any, name: str, value: int | bytes) -> None:
    import ctypes
    if name == "io.data":
        io = kvcpu.run.io
        data = value if isinstance(value, bytes) else value.to_bytes(io.size * io.count, "little")
        kvcpu.mapping.buf[io.data_offset: io.data_offset + len(data)] = data
        return
    obj, attr = _run_field(kvcpu, name)
    cur = getattr(obj, attr)
    if isinstance(cur, ctypes.Array):
        data = value if isinstance(value, bytes) else value.to_bytes(len(cur), "little")
        if len(data) > len(cur):
            raise DebugError(f"{name} holds {len(cur)} bytes")
        ctypes.memmove(cur, data, len(data))
    else:
        setattr(obj, attr, value if isinstance(value, int) else int.from_bytes(value, "little"))
