"""QEMU's pc-testdev (hw/misc/pc-testdev.c): the ISA test device kvm-unit-tests runs against.

Its ranges, all fixed:
    port 0xe0-0xe3    a 32-bit latch: an access of 1, 2 or 4 bytes at port 0xe0+k writes or reads
                      bytes k.. of it (emulator's string I/O tests read back what `rep outsb` left)
    port 0xe4-0xe7    flush: a 32-bit write of a guest-physical address drops the host mapping of
                      its page (eventinj makes the next access to its stack/IDT fault in again)
    port 0xe8-0xeb    the same latch, handled a byte at a time
    port 0x2000-0x2017  ISA IRQ lines 0-23: a byte write sets line (port - 0x2000) to (value != 0);
                      a wider access is split into byte writes (realmode's `outl` to 0x200b sets
                      IRQ 11 and clears 12-14); reads answer 0
    MMIO 0xff000000   64 KiB of "IORAM" that reads back what was written; being MMIO, every
                      access is an exit to userspace
Every byte of an access goes to the range it falls in, as QEMU's memory core splits an access
at range ends; a byte outside every range is dropped (reads of it float high).
"""

from __future__ import annotations

from kvmsim.vmm.devices.platform import Platform, RegionList

TESTDEV_PORT = 0xE0
TESTDEV_PORT_SPAN = 12            # latch 0xe0, flush 0xe4, byte latch 0xe8
FLUSH_PORT = 0xE4
IRQ_PORT = 0x2000
IRQ_LINES = 24
IORAM_BASE = 0xFF000000
IORAM_LEN = 0x10000
PAGE_MASK = ~0xFFF


class _Region:
    """One of the device's ranges on a bus: named after the device, counting into its counters."""

    suffix = ""

    def __init__(self, dev: "PcTestdev") -> None:
        self.dev, self.name = dev, f"{dev.name}.{self.suffix}"

    @property
    def counters(self) -> dict[str, int]:
        return self.dev.counters


class _Ports(_Region):
    """Ports 0xe0-0xeb: the latch (twice) and the flush register."""

    suffix = "ioport"

    def io_read(self, offset: int, size: int) -> bytes:
        out = bytearray(b"\xff" * size)           # past 0xeb: nothing decodes it
        for i in range(size):
            port = TESTDEV_PORT + offset + i
            if self.dev.is_latch(port):
                out[i] = self.dev.ioport_data[port & 3]
            elif FLUSH_PORT <= port < FLUSH_PORT + 4:
                out[i] = 0                        # test_flush_page_read
        return bytes(out)

    def io_write(self, offset: int, data: bytes) -> None:
        port = TESTDEV_PORT + offset
        if port == FLUSH_PORT and len(data) == 4:  # the flush range takes 32-bit accesses only
            self.dev.flush(int.from_bytes(data, "little"))
            return
        for i, b in enumerate(data):
            if self.dev.is_latch(port + i):
                self.dev.ioport_data[(port + i) & 3] = b


class _IrqLines(_Region):
    """Ports 0x2000-0x2017: one byte-wide register per ISA IRQ line."""

    suffix = "irq"

    def io_read(self, offset: int, size: int) -> bytes:
        return bytes(0 if offset + i < IRQ_LINES else 0xFF for i in range(size))

    def io_write(self, offset: int, data: bytes) -> None:
        for i, b in enumerate(data):              # valid.max_access_size 1: one write per byte
            if offset + i < IRQ_LINES:
                self.dev.set_irq(offset + i, int(b != 0))


class _Ioram(_Region):
    """MMIO 0xff000000: 64 KiB read back as written."""

    suffix = "iomem"

    def io_read(self, offset: int, size: int) -> bytes:
        self.dev.stats["iomem_reads"] += 1
        return bytes(self.dev.iomem[offset:offset + size]).ljust(size, b"\0")

    def io_write(self, offset: int, data: bytes) -> None:
        self.dev.stats["iomem_writes"] += 1
        self.dev.iomem[offset:offset + len(data)] = data[:max(0, IORAM_LEN - offset)]


class PcTestdev:
    """The device's state; its three ranges are the objects regions() hands to the buses."""

    def __init__(self, name: str = "pc-testdev", **_: object) -> None:
        self.name = name
        self.ioport_data = bytearray(4)          # the latch, little-endian
        self.iomem = bytearray(IORAM_LEN)
        self.irq_levels = 0                      # bit n: ISA IRQ line n as last written
        self.platform = Platform()
        self.stats = {"iomem_reads": 0, "iomem_writes": 0, "irq_raises": 0, "flushes": 0, "last_flush": 0}

    def connect(self, platform: Platform) -> None:
        self.platform = platform

    def regions(self) -> RegionList:
        yield "pio", TESTDEV_PORT, TESTDEV_PORT_SPAN, _Ports(self)
        yield "pio", IRQ_PORT, IRQ_LINES, _IrqLines(self)
        yield "mmio", IORAM_BASE, IORAM_LEN, _Ioram(self)

    @staticmethod
    def is_latch(port: int) -> bool:
        return TESTDEV_PORT <= port < TESTDEV_PORT + 4 or TESTDEV_PORT + 8 <= port < TESTDEV_PORT + 12

    def flush(self, gpa: int) -> None:
        """test_flush_page_write: the page of `gpa` loses its host mapping and is mapped again."""
        self.stats["flushes"] += 1
        self.stats["last_flush"] = gpa & PAGE_MASK & 0xFFFFFFFF
        if self.platform.flush_page is not None:
            self.platform.flush_page(gpa & PAGE_MASK & 0xFFFFFFFF)

    def set_irq(self, line: int, level: int) -> None:
        """qemu_set_irq on ISA line `line`: to the in-kernel irqchip if there is one, else recorded."""
        old = self.irq_levels >> line & 1
        self.irq_levels = self.irq_levels & ~(1 << line) | level << line
        if level and not old:
            self.stats["irq_raises"] += 1
        if self.platform.irq_line is not None:
            self.platform.irq_line(line, level)

    @property
    def counters(self) -> dict[str, int]:
        return {"ioport_data": int.from_bytes(self.ioport_data, "little"), "irq_levels": self.irq_levels,
                **self.stats}
