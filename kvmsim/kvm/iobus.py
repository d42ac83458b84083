"""Model of virt/kvm/kvm_main.c kvm_io_bus_* and virt/kvm/eventfd.c ioeventfd, coalesced_mmio.c.

In-kernel devices claim ranges on a bus; KVM asks them before going to userspace.
Matching follows kvm_io_bus_cmp: a registration of length 0 matches only its exact
base address, whatever the access length; otherwise overlapping ranges match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kvmsim.uapi import KVM_COALESCED_MMIO_MAX


class KvmIoDevice(Protocol):
    """struct kvm_io_device_ops: 0 when the device took the access, else -EOPNOTSUPP."""

    def read(self, addr: int, length: int, buf: bytearray) -> int: ...
    def write(self, addr: int, length: int, data: bytes) -> int: ...


EOPNOTSUPP = 95


@dataclass(order=True)
class KvmIoRange:
    addr: int
    len: int
    dev: KvmIoDevice = field(compare=False)


class KvmIoBus:
    """struct kvm_io_bus: ranges kept sorted by (addr, len)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ranges: list[KvmIoRange] = []

    def register(self, addr: int, length: int, dev: KvmIoDevice) -> None:
        self.ranges.append(KvmIoRange(addr, length, dev))
        self.ranges.sort()

    def unregister(self, dev: KvmIoDevice) -> None:
        self.ranges = [r for r in self.ranges if r.dev is not dev]

    def _matches(self, addr: int, length: int) -> list[KvmIoRange]:
        out = []
        for r in self.ranges:
            if r.len == 0:
                if r.addr == addr:
                    out.append(r)
            elif r.addr <= addr and addr + max(length, 1) <= r.addr + r.len:
                out.append(r)
        return out

    def write(self, addr: int, length: int, data: bytes) -> int:
        """kvm_io_bus_write: 0 if some device took it."""
        for r in self._matches(addr, length):
            if r.dev.write(addr, length, data) == 0:
                return 0
        return -EOPNOTSUPP

    def read(self, addr: int, length: int, buf: bytearray) -> int:
        """kvm_io_bus_read: 0 if some device filled `buf`."""
        for r in self._matches(addr, length):
            if r.dev.read(addr, length, buf) == 0:
                return 0
        return -EOPNOTSUPP


class Ioeventfd:
    """virt/kvm/eventfd.c struct _ioeventfd: a write (optionally matching a value) signals an eventfd."""

    def __init__(self, addr: int, length: int, datamatch: int | None) -> None:
        self.addr, self.length, self.datamatch = addr, length, datamatch
        self.count = 0

    def read(self, addr: int, length: int, buf: bytearray) -> int:
        return -EOPNOTSUPP

    def write(self, addr: int, length: int, data: bytes) -> int:
        if addr != self.addr or (self.length and length != self.length):
            return -EOPNOTSUPP
        if self.datamatch is not None and int.from_bytes(data[:length], "little") != self.datamatch:
            return -EOPNOTSUPP
        self.count += 1
        return 0

    def read_count(self) -> int:
        """eventfd read: the accumulated count, then zero."""
        n, self.count = self.count, 0
        return n


class CoalescedMmio:
    """virt/kvm/coalesced_mmio.c: writes in a zone go into the shared ring without an exit."""

    def __init__(self, ring, addr: int, size: int, pio: bool = False) -> None:
        self.ring, self.addr, self.size, self.pio = ring, addr, size, pio

    def read(self, addr: int, length: int, buf: bytearray) -> int:
        return -EOPNOTSUPP

    def write(self, addr: int, length: int, data: bytes) -> int:
        ring = self.ring
        if length > 8 or (ring.last + 1) % KVM_COALESCED_MMIO_MAX == ring.first:
            return -EOPNOTSUPP  # ring full: fall back to a normal exit
        ent = ring.coalesced_mmio[ring.last]
        ent.phys_addr, ent.len, ent.pio = addr, length, int(self.pio)
        for i in range(8):
            ent.data[i] = data[i] if i < length else 0
        ring.last = (ring.last + 1) % KVM_COALESCED_MMIO_MAX
        return 0
