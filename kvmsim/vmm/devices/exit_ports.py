"""Ports a test guest ends its machine with, as kvm-unit-tests' exit() does (lib/x86/io.c):
first `outl(code, 0xf4)` to QEMU's isa-debug-exit, then "Shutdown" byte by byte to the Bochs
power-off port 0x8900 if that did not stop it.  Either ends the run through GuestExit, the
mechanism the plain `debug-exit` device (simple.py) uses, with its own stop reason.
"""

from __future__ import annotations

from kvmsim.vmm.devices.simple import GuestExit

BOCHS_SHUTDOWN_PORT = 0x8900
BOCHS_SHUTDOWN_STR = b"Shutdown"


def isa_debug_exit_status(value: int) -> int:
    """The process exit status QEMU's debug_exit_write gives: (value << 1) | 1.  A shell sees its
    low 8 bits (kvm-unit-tests' run_tests.sh reads status 1 as PASS, 3 as FAIL)."""
    return (value << 1) | 1


class IsaDebugExit:
    """QEMU's isa-debug-exit (hw/misc/debugexit.c): a write of 1-4 bytes anywhere in
    [iobase, iobase + iosize) ends the run with stop reason isa-debug-exit, code (value << 1) | 1."""

    def __init__(self, name: str = "isa-debug-exit", iobase: int = 0xF4, iosize: int = 4, **_: object) -> None:
        self.name, self.iobase, self.size = name, iobase, iosize
        self.counters = {"writes": 0}

    def io_read(self, offset: int, size: int) -> bytes:
        return bytes(size)                          # the region has no read side: 0

    def io_write(self, offset: int, data: bytes) -> None:
        self.counters["writes"] += 1
        value = int.from_bytes(data, "little")
        status = isa_debug_exit_status(value)
        raise GuestExit(status, "isa-debug-exit",
                        f"{value:#x} written to port {self.iobase + offset:#x}: QEMU exits with status "
                        f"{status & 0xFF}")


class BochsShutdown:
    """The Bochs power-off port (Bochs, and old QEMU's bochs_bios_write; today's QEMU has nothing at
    0x8900): the bytes "Shutdown" written in a row turn the machine off (stop reason
    bochs-shutdown); a byte that does not continue the match resets it to the start."""

    size = 1

    def __init__(self, name: str = "bochs-shutdown", **_: object) -> None:
        self.name = name
        self.matched = 0
        self.counters = {"writes": 0}

    def io_read(self, offset: int, size: int) -> bytes:
        return b"\xff" * size                       # write-only: reads float high

    def io_write(self, offset: int, data: bytes) -> None:
        self.counters["writes"] += 1
        b = data[0]
        self.matched = self.matched + 1 if b == BOCHS_SHUTDOWN_STR[self.matched] else 0
        if self.matched == len(BOCHS_SHUTDOWN_STR):
            self.matched = 0
            raise GuestExit(None, "bochs-shutdown", 'the guest wrote "Shutdown" to the Bochs power-off port')
