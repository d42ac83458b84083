"""The ACPI power-management timer (QEMU hw/acpi/core.c acpi_pm_tmr_*, PIIX4's PM block).

A free-running 24-bit counter at 3.579545 MHz, read with IN from the port the FADT names in
pm_tmr_blk (0xb008 on QEMU's pc machine: PM base 0xb000 + 8; `vmexit inl_pmtimer` finds it
there).  Time is the machine's virtual clock (Platform.clock_ns): retired guest instructions on
the sim, so two runs of a scenario read the same values; the host clock on /dev/kvm.
"""

from __future__ import annotations

from kvmsim.vmm.devices.platform import Platform

PM_TIMER_FREQUENCY = 3_579_545
PM_TMR_BLK = 0xB008
PM_TMR_LEN = 4
PM_TMR_MASK = 0xFFFFFF          # 24 bits: the FADT leaves TMR_VAL_EXT clear
NANOSECONDS_PER_SECOND = 1_000_000_000


def pm_tmr_value(ns: int) -> int:
    """acpi_pm_tmr_get: ticks of the 3.579545 MHz clock in `ns` nanoseconds, modulo 2**24."""
    return ns * PM_TIMER_FREQUENCY // NANOSECONDS_PER_SECOND & PM_TMR_MASK


class AcpiPmTimer:
    """The 4-byte timer register: a read of 1-4 bytes at offset k answers bytes k.. of the 32-bit
    value (the region is implemented 4 bytes wide); writes do nothing."""

    size = PM_TMR_LEN

    def __init__(self, name: str = "acpi-pm-timer", **_: object) -> None:
        self.name = name
        self.platform = Platform()
        self.counters = {"reads": 0, "last_value": 0}

    def connect(self, platform: Platform) -> None:
        self.platform = platform

    def io_read(self, offset: int, size: int) -> bytes:
        value = pm_tmr_value(self.platform.clock_ns())
        self.counters["reads"] += 1
        self.counters["last_value"] = value
        return (value >> 8 * offset).to_bytes(4, "little")[:size].ljust(size, b"\0")

    def io_write(self, offset: int, data: bytes) -> None:
        pass
