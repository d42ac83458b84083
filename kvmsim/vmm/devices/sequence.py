"""Sequence registers: a port or MMIO register that answers a list of values in order.

A driver polling a status register (busy, busy, ready) needs a device whose answer changes
from one read to the next; each read takes the next value, then the sequence holds its last
value or starts over (`after`).  Writes change nothing but are counted and the last one kept.
"""

from __future__ import annotations


class SequenceRegister:
    """One register of `size` bytes; an access narrower than it reads the bytes at its offset."""

    def __init__(self, name: str = "sequence", size: int = 1, values: list[int] | None = None,
                 after: str = "hold", **_: object) -> None:
        self.name, self.size = name, size
        self.values = list(values or [0])
        self.repeat = after == "repeat"
        self.counters = {"reads": 0, "writes": 0, "last_write": 0}

    def _next(self) -> int:
        n = self.counters["reads"]
        self.counters["reads"] = n + 1
        if n < len(self.values):
            return self.values[n]
        return self.values[n % len(self.values)] if self.repeat else self.values[-1]

    def io_read(self, offset: int, size: int) -> bytes:
        return (self._next() >> (8 * offset) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def io_write(self, offset: int, data: bytes) -> None:
        self.counters["writes"] += 1
        self.counters["last_write"] = int.from_bytes(data, "little") << (8 * offset)
