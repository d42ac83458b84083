"""The one tracing mechanism every layer reports through (ftrace function graph + TRACE_EVENT).

`@kfunc` marks a modelled kernel function: when probing is on, each call emits an
entry and an exit event carrying the simulated kernel call stack; `tracepoint()`
emits a kernel tracepoint (trace.h) with its fields.  trace/ and debug/ subscribe;
nothing below them knows who listens.

Free when off: `@kfunc` returns the plain function.  The first subscriber swaps every
kvmsim module global and module-level table entry that names a probed function for
its probed twin (as ftrace patches call sites), and so every field of a module-level
record of an `@ops_table` class (kvm_x86_ops); the last unsubscribe swaps them back.
Tracepoints cost one `PROBES.enabled` test.

Time is virtual: each event carries `insns`, the running vCPU's retired guest instructions when
it was emitted (`PROBES.clock`, installed by kvm/ when a vCPU is created), and `seq` breaks ties.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(slots=True)
class Event:
    """One observation: kind is 'call', 'ret' or 'tp' (tracepoint); seq orders them.
    Its virtual timestamp is (insns, seq): retired guest instructions at emission, then order."""

    seq: int
    kind: str
    name: str
    stack: tuple[str, ...]
    fields: dict[str, Any] = field(default_factory=dict)
    insns: int = 0


def no_clock() -> int:
    """The trace clock while no vCPU exists: nothing has retired."""
    return 0


Subscriber = Callable[[Event], None]  # may raise to abort the run (e.g. the debugger's quit)


class Probes:
    """Registry of subscribers and the simulated kernel call stack."""

    def __init__(self) -> None:
        self.enabled = False
        self._subs: list[Subscriber] = []
        self._fan: tuple[Subscriber, ...] = ()   # snapshot emit iterates (a subscriber may unsubscribe)
        self.stack: list[str] = []
        self.seq = 0
        self.clock: Callable[[], int] = no_clock   # retired guest instructions of the running vCPU

    def subscribe(self, sub: Subscriber) -> None:
        self._subs.append(sub)
        self._fan = tuple(self._subs)
        if not self.enabled:
            _rebind(_PROBED)
        self.enabled = True

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        self._fan = tuple(self._subs)
        if self.enabled and not self._subs:
            _rebind({t: fn for t, fn in _PLAIN.items() if t not in _PINNED} if _PINNED else _PLAIN)
            self.stack.clear()
        self.enabled = bool(self._subs)

    def emit(self, kind: str, name: str, fields: dict[str, Any]) -> None:
        self.seq += 1
        ev = Event(self.seq, kind, name, tuple(self.stack), fields, self.clock())
        for sub in self._fan:
            sub(ev)


PROBES = Probes()


_PROBED: dict[Callable, Callable] = {}   # plain function -> probed twin
_PLAIN: dict[Callable, Callable] = {}    # probed twin -> plain function
_PINNED: dict[Callable, int] = {}        # probed twin -> pins: bound even while probing is off (pin())


def ops_table(cls: type[T]) -> type[T]:
    """Mark a record class of callbacks (kvm_x86_ops): its module-level instances are call sites too."""
    cls.__ops_table__ = True  # type: ignore[attr-defined]
    return cls


def _twin(val: Any, mapping: dict[Callable, Callable]) -> Any:
    """val's counterpart in mapping, or None: any hashable callable may be a kfunc (a plain function,
    or a compiled one: kvmsim/compiled/); unhashable ones (ctypes function pointers) are not."""
    if not callable(val) or isinstance(val, type):
        return None
    try:
        return mapping.get(val)
    except TypeError:
        return None


def _rebind(mapping: dict[Callable, Callable]) -> None:
    """Swap probed functions in kvmsim modules' globals, module-level dict tables and ops records."""
    me = sys.modules[__name__]
    for name, mod in list(sys.modules.items()):
        if not name.startswith("kvmsim") or mod is None or mod is me:
            continue    # (our own _PROBED/_PLAIN are dict tables by the isupper() rule: not theirs to swap)
        for attr, val in list(vars(mod).items()):
            if isinstance(val, dict):
                if attr.isupper():
                    for k, v in list(val.items()):
                        if (t := _twin(v, mapping)) is not None:
                            val[k] = t
            elif getattr(type(val), "__ops_table__", False):
                for slot in type(val).__slots__:
                    if (t := _twin(getattr(val, slot), mapping)) is not None:
                        setattr(val, slot, t)
            elif (t := _twin(val, mapping)) is not None:
                setattr(mod, attr, t)


def pin(names: tuple[str, ...]) -> None:
    """Bind these kfuncs' probed twins even while probing is off, so that each call has a Python
    frame naming it (the twin's, which calls straight through while off).  The debugger pins the
    functions live under KVM_RUN while guest code runs: a compiled kfunc (kvmsim/compiled/) has no
    frame of its own, and `bt` after attaching mid-KVM_RUN finds the live ones by their frames."""
    twins = {fn: t for fn, t in _PROBED.items() if getattr(fn, "__kfunc__", None) in names}
    for t in twins.values():
        _PINNED[t] = _PINNED.get(t, 0) + 1
    _rebind(twins)


def unpin(names: tuple[str, ...]) -> None:
    """Undo one pin() of these names; a twin unpinned for good goes back to its plain function
    unless probing is on."""
    back = {}
    for t, n in list(_PINNED.items()):
        if getattr(t, "__kfunc__", None) in names:
            if n > 1:
                _PINNED[t] = n - 1
            else:
                del _PINNED[t]
                back[t] = _PLAIN[t]
    if back and not PROBES.enabled:
        _rebind(back)


def kfunc(*arg_names: str) -> Callable[[F], F]:
    """Mark a modelled kernel function; `arg_names` are the arguments worth recording."""

    def wrap(fn: F) -> F:
        name = fn.__name__
        code = fn.__code__
        params = code.co_varnames[: code.co_argcount]
        picks = [(a, params.index(a)) for a in arg_names if a in params]

        @functools.wraps(fn)
        def probed(*args: Any, **kwargs: Any) -> Any:
            if not PROBES.enabled:
                return fn(*args, **kwargs)
            p = PROBES            # emit() inlined: this runs twice per modelled call while tracing
            stack = p.stack
            p.seq = seq = p.seq + 1
            ev = Event(seq, "call", name, tuple(stack),
                       {a: (args[i] if i < len(args) else kwargs.get(a)) for a, i in picks} if picks else {},
                       p.clock())
            for sub in p._fan:
                sub(ev)
            stack.append(name)
            try:
                ret = fn(*args, **kwargs)
            finally:
                stack.pop()
            p.seq = seq = p.seq + 1
            ev = Event(seq, "ret", name, tuple(stack), {"ret": ret if ret is None or isinstance(ret, int) else repr(ret)},
                       p.clock())
            for sub in p._fan:
                sub(ev)
            return ret

        probed.__kfunc__ = name  # type: ignore[attr-defined]
        fn.__kfunc__ = name  # type: ignore[attr-defined]
        _PROBED[fn], _PLAIN[probed] = probed, fn
        if PROBES.enabled:
            return probed  # type: ignore[return-value]
        return fn

    return wrap


def tracepoint(name: str, **fields: Any) -> None:
    """Emit a kernel tracepoint: its fields only, in TP_STRUCT__entry order (kvm/trace.py's
    TRACE_EVENTS prints them).  Callers guard with `if PROBES.enabled` on hot paths."""
    if PROBES.enabled:
        PROBES.emit("tp", name, fields)


def kfunc_names() -> set[str]:
    """Every modelled kernel function (@kfunc) imported so far."""
    return {getattr(fn, "__kfunc__", fn.__name__) for fn in _PROBED}
