"""What a platform device reaches beyond its own registers (kvmtool's `struct kvm` a device gets).

The scenario runner fills one Platform per machine and hands it to every device that has a
`connect(platform)` method; a device that needs several address ranges lists them in
`regions()` (the runner registers each on its bus), where a plain device has one `port`/`gpa`.
"""

from __future__ import annotations

import ctypes
import mmap
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

# Virtual time: one retired guest instruction is one nanosecond (a 1 GHz vCPU retiring one
# instruction a cycle), so a device clock read twice in a run answers the same on every run.
VIRTUAL_NS_PER_INSN = 1


def host_clock_ns() -> Callable[[], int]:
    """Nanoseconds of the host's monotonic clock since this call (what QEMU's virtual clock is
    under KVM): the fallback where no retired-instruction count exists (the /dev/kvm backend)."""
    t0 = time.monotonic_ns()
    return lambda: time.monotonic_ns() - t0


def insn_clock_ns(retired: Callable[[], int]) -> Callable[[], int]:
    """Nanoseconds of virtual time from a retired-instruction counter (the sim's silicon)."""
    return lambda: retired() * VIRTUAL_NS_PER_INSN


_libc = ctypes.CDLL(None, use_errno=True)
_PROT_NONE, _PROT_READ_WRITE = 0, mmap.PROT_READ | mmap.PROT_WRITE


def host_page_flush(ram: list[tuple[int, mmap.mmap]]) -> Callable[[int], bool]:
    """pc-testdev's flush as QEMU does it: the host page backing a GPA made PROT_NONE and then
    read-write again, so that KVM's MMU notifier drops its mapping and the guest's next access
    faults it in (real /dev/kvm).  The sim has no MMU notifier: there the page just stays mapped."""

    def flush(gpa: int) -> bool:
        """True when a RAM page was flushed; False for a GPA outside RAM (QEMU maps nothing there)."""
        for base, buf in ram:
            if base <= gpa < base + len(buf):
                off = (gpa - base) & -mmap.PAGESIZE
                addr = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(buf, off)))
                size = ctypes.c_size_t(mmap.PAGESIZE)
                return _libc.mprotect(addr, size, _PROT_NONE) == 0 == _libc.mprotect(addr, size, _PROT_READ_WRITE)
        return False

    return flush


@dataclass
class Platform:
    """Machine-wide services for devices.

    clock_ns:   virtual nanoseconds since the machine was made (deterministic on the sim).
    irq_line:   KVM_IRQ_LINE(irq, level) when the VM has an in-kernel irqchip, else None (the
                device then only records the line; with no PIC model in userspace nothing knows
                the vector, so nothing is injected).
    flush_page: drop the host mapping of a guest page (host_page_flush: pc-testdev's mprotect,
                which makes KVM zap its SPTE through the MMU notifier), else None (recorded only).
    """

    clock_ns: Callable[[], int] = field(default_factory=host_clock_ns)
    irq_line: Callable[[int, int], None] | None = None
    flush_page: Callable[[int], object] | None = None


class Region(Protocol):
    """One address range of a multi-range device, as the bus sees a device."""

    name: str
    counters: dict[str, int]

    def io_read(self, offset: int, size: int) -> bytes: ...
    def io_write(self, offset: int, data: bytes) -> None: ...


RegionList = Iterator[tuple[str, int, int, Region]]   # (bus "pio" | "mmio", base, size, region)
