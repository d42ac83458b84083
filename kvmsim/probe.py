"""The one tracing mechanism every layer reports through (ftrace function graph + TRACE_EVENT).

`@kfunc` marks a modelled kernel function: when probing is on, each call emits an
entry and an exit event carrying the simulated kernel call stack; `tracepoint()`
emits a kernel tracepoint (trace.h) with its fields.  trace/ and debug/ subscribe;
nothing below them knows who listens.  When nobody listens, `PROBES.enabled` is
False and a probed call costs one attribute test.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class Event:
    """One observation: kind is 'call', 'ret' or 'tp' (tracepoint); seq orders them."""

    seq: int
    kind: str
    name: str
    stack: tuple[str, ...]
    fields: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], None]  # may raise to abort the run (e.g. the debugger's quit)


class Probes:
    """Registry of subscribers and the simulated kernel call stack."""

    def __init__(self) -> None:
        self.enabled = False
        self._subs: list[Subscriber] = []
        self.stack: list[str] = []
        self.seq = 0

    def subscribe(self, sub: Subscriber) -> None:
        self._subs.append(sub)
        self.enabled = True

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        self.enabled = bool(self._subs)
        if not self.enabled:
            self.stack.clear()

    def emit(self, kind: str, name: str, fields: dict[str, Any]) -> None:
        self.seq += 1
        ev = Event(self.seq, kind, name, tuple(self.stack), fields)
        for sub in tuple(self._subs):
            sub(ev)


PROBES = Probes()


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
            fields = {a: (args[i] if i < len(args) else kwargs.get(a)) for a, i in picks}
            PROBES.emit("call", name, fields)
            PROBES.stack.append(name)
            try:
                ret = fn(*args, **kwargs)
            finally:
                PROBES.stack.pop()
            PROBES.emit("ret", name, {"ret": ret if isinstance(ret, (int, type(None))) else repr(ret)})
            return ret

        probed.__kfunc__ = name  # type: ignore[attr-defined]
        return probed  # type: ignore[return-value]

    return wrap


def tracepoint(name: str, **fields: Any) -> None:
    """Emit a kernel tracepoint (callers guard with `if PROBES.enabled` on hot paths)."""
    if PROBES.enabled:
        PROBES.emit("tp", name, fields)
