"""Breakpoints: what a spec means, where it matches in the probe stream, hit counts (gdb's rules).

    exit REASON          kvm_exit with that basic exit reason (name as kvm_exit prints it, or number)
    port LO[-HI]         kvm_exit IO_INSTRUCTION on a port in the range (from the exit qualification)
    gpa LO[-HI]          kvm_exit EPT_VIOLATION / EPT_MISCONFIG at a guest-physical address in the range
    userspace KIND       kvm_userspace_exit of KVM_EXIT_<KIND> (mmio, io, hlt, x86_rdmsr, ...)
    emultype BITS        x86_emulate_instruction entered with all these EMULTYPE bits (NO_DECODE|PF, or a number)
    func NAME            the call of any modelled kernel function (@kfunc)
    tp NAME              a tracepoint (kvm_mmio, kvm_pio, ...)
    rip ADDR | *ADDR | SYMBOL   the guest reaching a linear address (silicon stop hook)

A hit counts when the spec matches and the condition (if any) is true; an ignore count swallows
hits; a temporary breakpoint is deleted at its first stop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvmsim import probe
from kvmsim.hw.vmcs import ExitReason, IoExitQual
from kvmsim.probe import Event
from kvmsim.uapi import KvmExit

if TYPE_CHECKING:
    from kvmsim.debug.engine import Debugger

KINDS = ("exit", "port", "gpa", "userspace", "emultype", "func", "tp", "rip")
_EPT = (int(ExitReason.EPT_VIOLATION), int(ExitReason.EPT_MISCONFIG))
_IO = int(ExitReason.IO_INSTRUCTION)


class DebugError(Exception):
    """A bad command argument or a request the current state cannot serve: one line for the user."""


@dataclass
class Breakpoint:
    number: int
    kind: str
    spec: str
    lo: int = 0
    hi: int = 0
    name: str = ""
    enabled: bool = True
    condition: str | None = None
    ignore_count: int = 0
    temporary: bool = False
    hits: int = 0

    def describe(self) -> str:
        return f"{self.kind} {self.spec}"


def parse_int(text: str) -> int:
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise DebugError(f"not a number: {text!r}") from None


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    a = parse_int(lo)
    b = parse_int(hi) if hi else a
    if b < a:
        raise DebugError(f"empty range {text!r}")
    return a, b


def _exit_reason(text: str) -> int:
    t = text.upper().removeprefix("EXIT_REASON_")
    if t in ExitReason.__members__:
        return int(ExitReason[t])
    try:
        return parse_int(text)
    except DebugError:
        raise DebugError(f"unknown exit reason {text!r} (e.g. IO_INSTRUCTION, EPT_VIOLATION, 30)") from None


def _emultype(text: str) -> int:
    # here, not at the top: `kvmsim --help` imports this module, and kvm/ loads the whole KVM model
    from kvmsim.kvm.emulate.codes import EmulType

    bits = 0
    for part in text.split("|"):
        p = part.strip().upper().removeprefix("EMULTYPE_")
        if p in EmulType.__members__:
            bits |= int(EmulType[p])
        else:
            try:
                bits |= parse_int(part)
            except DebugError:
                raise DebugError(f"unknown EMULTYPE bit {part!r} ({', '.join(EmulType.__members__)})") from None
    return bits


def kfunc_names() -> set[str]:
    return {getattr(f, "__kfunc__", f.__name__) for f in probe._PROBED}


def parse_spec(spec: str, dbg: "Debugger") -> Breakpoint:
    """A breakpoint spec (module docstring) → an unnumbered Breakpoint."""
    words = spec.split(None, 1)
    if not words:
        raise DebugError("break what? (exit, port, gpa, userspace, emultype, func, tp, rip, or a guest symbol)")
    kind, arg = words[0].lower(), (words[1].strip() if len(words) > 1 else "")
    if kind.startswith("*"):
        kind, arg = "rip", kind[1:] or arg
    elif kind not in KINDS:
        kind, arg = "rip", spec.strip()
    if not arg:
        raise DebugError(f"break {kind} needs an argument")
    bp = Breakpoint(0, kind, arg)
    if kind == "exit":
        bp.lo = _exit_reason(arg)
        try:
            bp.spec = ExitReason(bp.lo).name
        except ValueError:
            bp.spec = str(bp.lo)
    elif kind in ("port", "gpa"):
        bp.lo, bp.hi = _range(arg)
    elif kind == "userspace":
        name = arg.upper().removeprefix("KVM_EXIT_")
        if name not in KvmExit.__members__:
            raise DebugError(f"unknown userspace exit {arg!r} ({', '.join(n.lower() for n in KvmExit.__members__)})")
        bp.lo, bp.spec = int(KvmExit[name]), name.lower()
    elif kind == "emultype":
        bp.lo = _emultype(arg)
    elif kind == "func":
        if arg not in kfunc_names():
            raise DebugError(f"no modelled kernel function {arg!r} (complete with TAB)")
        bp.name = arg
    elif kind == "tp":
        bp.name = arg
    else:
        addr = dbg.symbol(arg.lstrip("*")) if not arg.lstrip("*")[:1].isdigit() else None
        bp.lo = addr if addr is not None else parse_int(arg.lstrip("*"))
        bp.spec = dbg.symbolize(bp.lo)
    return bp


class BreakpointTable:
    def __init__(self) -> None:
        self.by_number: dict[int, Breakpoint] = {}
        self._next = 1

    def all(self) -> list[Breakpoint]:
        return list(self.by_number.values())

    def add(self, bp: Breakpoint) -> Breakpoint:
        bp.number = self._next
        self._next += 1
        self.by_number[bp.number] = bp
        return bp

    def get(self, number: int) -> Breakpoint:
        bp = self.by_number.get(number)
        if bp is None:
            raise DebugError(f"no breakpoint number {number}")
        return bp

    def remove(self, number: int | None) -> list[Breakpoint]:
        if number is None:
            gone = self.all()
            self.by_number.clear()
            return gone
        return [self.by_number.pop(self.get(number).number)]

    # ------------------------------------------------------------------ matching
    def match_event(self, ev: Event, dbg: "Debugger") -> tuple[int, ...]:
        if not self.by_number:
            return ()
        return self._hits([bp for bp in self.by_number.values()
                           if bp.enabled and bp.kind != "rip" and _matches(bp, ev, dbg)], ev, dbg)

    def match_rip(self, here: int, dbg: "Debugger") -> tuple[int, ...]:
        return self._hits([bp for bp in self.by_number.values()
                           if bp.enabled and bp.kind == "rip" and bp.lo == here], None, dbg)

    def _hits(self, cands: list[Breakpoint], ev: Event | None, dbg: "Debugger") -> tuple[int, ...]:
        out = []
        for bp in cands:
            if bp.condition:
                try:
                    if not dbg.evaluate(bp.condition, ev):
                        continue
                except DebugError:
                    pass                      # an error in the condition stops (gdb does too)
            bp.hits += 1
            if bp.ignore_count:
                bp.ignore_count -= 1
                continue
            out.append(bp.number)
            if bp.temporary:
                dbg.delete(bp.number)
        return tuple(out)


def _matches(bp: Breakpoint, ev: Event, dbg: "Debugger") -> bool:
    k = bp.kind
    if k in ("exit", "port", "gpa"):
        if ev.kind != "tp" or ev.name != "kvm_exit":
            return False
        basic = ev.fields.get("exit_reason", 0) & 0xFFFF
        if k == "exit":
            return basic == bp.lo
        if k == "port":
            return basic == _IO and bp.lo <= IoExitQual.decode(ev.fields.get("info1", 0)).port <= bp.hi
        return basic in _EPT and bp.lo <= dbg.hw.vmcs.guest_physical_address <= bp.hi
    if k == "userspace":
        return (ev.kind == "tp" and ev.name == "kvm_userspace_exit" and ev.fields.get("errno", -1) >= 0
                and ev.fields.get("reason") == bp.lo)
    if k == "emultype":
        t = ev.fields.get("emulation_type")
        return ev.kind == "call" and ev.name == "x86_emulate_instruction" and t is not None and \
            int(t) & bp.lo == bp.lo
    if k == "func":
        return ev.kind == "call" and ev.name == bp.name
    if k == "tp":
        return ev.kind == "tp" and ev.name == bp.name
    return False


SPEC_RE = re.compile(r"^(?P<spec>.*?)(?:\s+if\s+(?P<cond>.+))?$")


def split_condition(text: str) -> tuple[str, str | None]:
    """`exit IO_INSTRUCTION if regs.rax == 1` → (spec, condition)."""
    m = SPEC_RE.match(text.strip())
    assert m is not None
    return m.group("spec"), m.group("cond")
