"""A device written by the scenario's author in Python (`type: python, class: "module:Class"`).

The protocol (scenario/pydevice.py checks it when the scenario is loaded):

    class MyDevice:
        def __init__(self, **args): ...                  # the scenario's `args`
        def read(self, offset: int, size: int) -> int:   # a guest read of `size` bytes
        def write(self, offset: int, size: int, value: int) -> None:
        def state(self) -> dict[str, int]: ...           # optional: what expect.devices sees

`offset` is from the device's `port` or `gpa`; `size` is 1, 2, 4 or 8 (the access width; a
REP INS/OUTS is one call per element); values are little-endian integers.  kvmsim counts
`reads` and `writes` itself; `state()`'s keys are added to (and may replace) those counters.
Anything the object raises during a run, or an answer outside the protocol (a read that is not
an int of `size` bytes, a state that is not a dict of ints), ends the run with stop reason
`device-error` naming the class: the VMM stops, as kvmtool does when a device fails.
"""

from __future__ import annotations

from typing import Any


class DeviceError(Exception):
    """The user's device raised or broke the protocol; the run loop ends with Stop('device-error')."""


class PythonDevice:
    """Adapts a user's object to the VMM bus's io_read / io_write."""

    def __init__(self, name: str, cls: type, size: int, args: dict[str, Any] | None = None,
                 spec: str | None = None, **_: object) -> None:
        self.name, self.size, self.cls_name = name, size, spec or cls.__qualname__   # spec: 'module:Class'
        self._counts = {"reads": 0, "writes": 0}
        self.obj = self._call("__init__", lambda: cls(**(args or {})))

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except (Exception, SystemExit) as e:
            raise DeviceError(f"python device {self.name!r} ({self.cls_name}) raised in {what}: "
                              f"{type(e).__name__}: {e}") from e

    def io_read(self, offset: int, size: int) -> bytes:
        self._counts["reads"] += 1
        v = self._call(f"read(offset={offset:#x}, size={size})", lambda: self.obj.read(offset, size))
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << (8 * size):
            raise DeviceError(f"python device {self.name!r} ({self.cls_name}): read(offset={offset:#x}, "
                              f"size={size}) returned {v!r}, not an int of {size} byte(s)")
        return v.to_bytes(size, "little")

    def io_write(self, offset: int, data: bytes) -> None:
        self._counts["writes"] += 1
        value = int.from_bytes(data, "little")
        self._call(f"write(offset={offset:#x}, size={len(data)}, value={value:#x})",
                   lambda: self.obj.write(offset, len(data), value))

    @property
    def counters(self) -> dict[str, int]:
        """kvmsim's read/write counts, then the object's state() on top."""
        out = dict(self._counts)
        state = getattr(self.obj, "state", None)
        if state is None:
            return out
        got = self._call("state()", state)
        if not isinstance(got, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                                and 0 <= v < 1 << 64 for k, v in got.items()):
            raise DeviceError(f"python device {self.name!r} ({self.cls_name}): state() returned {got!r}, "
                              "not a dict of str to unsigned 64-bit ints")
        out.update(got)
        return out
