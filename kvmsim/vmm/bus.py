"""The VMM's PIO and MMIO buses (kvmtool ioport.c / mmio.c): ranges owned by devices.

The run loop asks a bus to handle an access; the bus finds the device by address,
so address ranges never appear in the loop (STYLE.md: run loops only dispatch).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Protocol


class Device(Protocol):
    """A device model. `counters` are what `expect.devices` checks."""

    name: str
    counters: dict[str, int]

    def io_read(self, offset: int, size: int) -> bytes: ...
    def io_write(self, offset: int, data: bytes) -> None: ...


_MISS = object()
_FOUND_MAX = 4096   # remembered addresses per bus (guest ports and MMIO registers repeat)


@dataclass(order=True)
class _Range:
    base: int
    size: int
    dev: Device = field(compare=False)


class Bus:
    """Non-overlapping ranges, looked up by bisection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ranges: list[_Range] = []
        self._bases: list[int] = []
        self._found: dict[int, tuple[Device, int] | None] = {}   # find() answers by address (ports repeat)

    def register(self, base: int, size: int, dev: Device) -> None:
        """kvm__register_iotrap: claim [base, base + size) for dev."""
        for r in self._ranges:
            if base < r.base + r.size and r.base < base + size:
                raise ValueError(f"{self.name}: {dev.name} at {base:#x}+{size:#x} overlaps {r.dev.name}")
        bisect.insort(self._ranges, _Range(base, size, dev))
        self._bases = [r.base for r in self._ranges]
        self._found.clear()

    def find(self, addr: int) -> tuple[Device, int] | None:
        found = self._found.get(addr, _MISS)
        if found is _MISS:
            found = self._lookup(addr)
            if len(self._found) < _FOUND_MAX:
                self._found[addr] = found
        return found

    def _lookup(self, addr: int) -> tuple[Device, int] | None:
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            r = self._ranges[i]
            if addr < r.base + r.size:
                return r.dev, addr - r.base
        return None

    def devices(self) -> list[Device]:
        return [r.dev for r in self._ranges]
