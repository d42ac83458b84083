"""What a platform device reaches beyond its own registers (kvmtool's `struct kvm` a device gets).

The scenario runner fills one Platform per machine and hands it to every device that has a
`connect(platform)` method; a device that needs several address ranges lists them in
`regions()` (the runner registers each on its bus), where a plain device has one `port`/`gpa`.
"""

from __future__ import annotations

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


@dataclass
class Platform:
    """Machine-wide services for devices.

    clock_ns:   virtual nanoseconds since the machine was made (deterministic on the sim).
    irq_line:   KVM_IRQ_LINE(irq, level) when the VM has an in-kernel irqchip, else None (the
                device then only records the line; with no PIC model in userspace nothing knows
                the vector, so nothing is injected).
    flush_page: drop the host mapping of a guest page (pc-testdev's mprotect, which makes KVM
                zap its SPTE through the MMU notifier), else None (recorded only).
    """

    clock_ns: Callable[[], int] = field(default_factory=host_clock_ns)
    irq_line: Callable[[int, int], None] | None = None
    flush_page: Callable[[int], None] | None = None


class Region(Protocol):
    """One address range of a multi-range device, as the bus sees a device."""

    name: str
    counters: dict[str, int]

    def io_read(self, offset: int, size: int) -> bytes: ...
    def io_write(self, offset: int, data: bytes) -> None: ...


RegionList = Iterator[tuple[str, int, int, Region]]   # (bus "pio" | "mmio", base, size, region)
