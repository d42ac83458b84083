"""The platform devices QEMU gives kvm-unit-tests (vmm/devices/fw_cfg.py, testdev.py, exit_ports.py,
pm_timer.py, vmm/acpi.py), register by register: what each access returns or changes, byte-exact,
as QEMU's hw/nvram/fw_cfg.c, hw/misc/pc-testdev.c, hw/misc/debugexit.c and hw/acpi/core.c answer."""

from __future__ import annotations

import struct

import pytest

from kvmsim.vmm.acpi import build_acpi_tables
from kvmsim.vmm.devices import DEVICE_TYPES
from kvmsim.vmm.devices.exit_ports import BochsShutdown, IsaDebugExit
from kvmsim.vmm.devices.fw_cfg import FwCfg
from kvmsim.vmm.devices.platform import Platform, host_page_flush, insn_clock_ns
from kvmsim.vmm.devices.pm_timer import AcpiPmTimer, pm_tmr_value
from kvmsim.vmm.devices.simple import GuestExit
from kvmsim.vmm.devices.testdev import IORAM_LEN, PcTestdev

CTL, DATA = 0, 1          # fw_cfg offsets from port 0x510


def fw_read(dev: FwCfg, key: int, n: int, port: int = DATA) -> bytes:
    dev.io_write(CTL, key.to_bytes(2, "little"))
    return b"".join(dev.io_read(port, 1) for _ in range(n))


# ---------------------------------------------------------------- fw_cfg

def test_fw_cfg_items_as_qemu_adds_them() -> None:
    dev = FwCfg(nb_cpus=3, ram_size=0x1234_5678_9000)
    assert fw_read(dev, 0x00, 4) == b"QEMU"
    assert fw_read(dev, 0x01, 4) == b"\x01\0\0\0"            # FW_CFG_VERSION only: no DMA
    assert fw_read(dev, 0x02, 16) == bytes(16)               # UUID
    assert fw_read(dev, 0x03, 8) == (0x1234_5678_9000).to_bytes(8, "little")
    assert fw_read(dev, 0x05, 2) == b"\x03\0"                # NB_CPUS
    assert fw_read(dev, 0x0F, 2) == b"\x03\0"                # MAX_CPUS defaults to nb_cpus
    assert fw_read(dev, 0x8002, 4) == b"\x01\0\0\0"          # IRQ0_OVERRIDE, an arch-local key
    assert fw_read(FwCfg(nb_cpus=1, max_cpus=8), 0x0F, 2) == b"\x08\0"


def test_fw_cfg_reset_selects_the_signature() -> None:
    dev = FwCfg()
    assert b"".join(dev.io_read(DATA, 1) for _ in range(4)) == b"QEMU"


def test_fw_cfg_reads_past_the_item_are_zero_and_a_select_starts_over() -> None:
    dev = FwCfg(nb_cpus=2)
    assert fw_read(dev, 0x05, 4) == b"\x02\0\0\0"            # 2-byte item, then zeros
    assert dev.cur_offset == 2                               # the offset stops at the end
    assert fw_read(dev, 0x05, 1) == b"\x02"                  # selecting again rewinds


def test_fw_cfg_unknown_key_reads_zero() -> None:
    dev = FwCfg()
    assert fw_read(dev, 0x19, 4) == bytes(4)                 # file directory: not modelled
    assert fw_read(dev, 0x3FFF, 2) == bytes(2)


def test_fw_cfg_write_channel_bit_is_dropped_from_the_key() -> None:
    assert fw_read(FwCfg(nb_cpus=5), 0x4005, 2) == b"\x05\0"


def test_fw_cfg_comb_region_access_widths() -> None:
    dev = FwCfg(nb_cpus=7)
    dev.io_write(DATA, (5).to_bytes(2, "little"))            # a 16-bit write at 0x511 selects too
    assert dev.io_read(CTL, 1) == b"\x07"                    # a byte read at 0x510 reads data
    dev.io_write(CTL, (0).to_bytes(2, "little"))
    assert dev.io_read(CTL, 2) == b"\0\0"                    # 16-bit read: not accepted, 0 ...
    assert dev.io_read(CTL, 4) == bytes(4)
    assert dev.io_read(DATA, 1) == b"Q"                      # ... and the offset did not move
    dev.io_write(DATA, b"x")                                 # the data write does nothing
    dev.io_write(CTL, (1).to_bytes(4, "little"))             # 32-bit write: not accepted, no select
    assert dev.io_read(DATA, 1) == b"E"
    assert dev.counters["selects"] == 2 and dev.counters["last_key"] == 0


# ---------------------------------------------------------------- pc-testdev

def regions(dev: PcTestdev) -> dict[str, tuple[str, int, int, object]]:
    return {part.name.split(".")[-1]: (bus, base, size, part) for bus, base, size, part in dev.regions()}


def test_testdev_claims_qemus_addresses() -> None:
    r = regions(PcTestdev())
    assert {k: v[:3] for k, v in r.items()} == {"ioport": ("pio", 0xE0, 12), "irq": ("pio", 0x2000, 24),
                                               "iomem": ("mmio", 0xFF000000, 0x10000)}


def test_testdev_latch_widths_and_offsets() -> None:
    ports = regions(PcTestdev())["ioport"][3]
    ports.io_write(0, (0x12345678).to_bytes(4, "little"))
    assert ports.io_read(0, 4) == bytes.fromhex("78563412")
    assert ports.io_read(1, 1) == b"\x56"
    assert ports.io_read(2, 2) == bytes.fromhex("3412")
    ports.io_write(1, (0xabcd).to_bytes(2, "little"))        # bits 8-23
    assert ports.io_read(0, 4) == bytes.fromhex("78cdab12")
    ports.io_write(3, b"\x99")
    assert int.from_bytes(ports.io_read(0, 4), "little") == 0x99ABCD78


def test_testdev_byte_alias_is_the_same_latch() -> None:
    dev = PcTestdev()
    ports = regions(dev)["ioport"][3]
    ports.io_write(8, (0x11223344).to_bytes(4, "little"))    # port 0xe8
    assert ports.io_read(0, 4) == bytes.fromhex("44332211")
    assert ports.io_read(9, 2) == bytes.fromhex("3322")
    assert dev.counters["ioport_data"] == 0x11223344


def test_testdev_access_past_the_ports_floats_high() -> None:
    ports = regions(PcTestdev())["ioport"][3]
    ports.io_write(0, (0x04030201).to_bytes(4, "little"))
    assert ports.io_read(10, 4) == bytes([3, 4, 0xFF, 0xFF])   # 0xea-0xeb latch, 0xec-0xed nothing


def test_testdev_flush_takes_dword_writes_only() -> None:
    flushed: list[int] = []
    dev = PcTestdev()
    dev.connect(Platform(flush_page=flushed.append))
    ports = regions(dev)["ioport"][3]
    ports.io_write(4, (0x2345).to_bytes(2, "little"))       # 16-bit: not accepted
    ports.io_write(4, (0xFEDC_B123).to_bytes(4, "little"))
    assert flushed == [0xFEDC_B000]
    assert dev.counters["flushes"] == 1 and dev.counters["last_flush"] == 0xFEDC_B000
    assert ports.io_read(4, 4) == bytes(4)
    assert dev.counters["ioport_data"] == 0                  # the flush range is not the latch


def test_host_page_flush_keeps_the_page_contents() -> None:
    import mmap
    buf = mmap.mmap(-1, 4 * mmap.PAGESIZE)
    buf[mmap.PAGESIZE + 5:mmap.PAGESIZE + 9] = b"kvm!"
    flush = host_page_flush([(0x100000, buf)])
    assert flush(0x100000 + mmap.PAGESIZE + 0x123) is True       # both mprotect calls succeeded
    assert buf[mmap.PAGESIZE + 5:mmap.PAGESIZE + 9] == b"kvm!"  # and the page is read-write again
    buf[mmap.PAGESIZE] = 1
    assert flush(0xFF000000) is False                            # not RAM: nothing to flush
    buf.close()                                                  # no buffer export left behind


def test_testdev_irq_lines_byte_at_a_time() -> None:
    calls: list[tuple[int, int]] = []
    dev = PcTestdev()
    dev.connect(Platform(irq_line=lambda irq, level: calls.append((irq, level))))
    irq = regions(dev)["irq"][3]
    irq.io_write(3, b"\x07")                                 # any non-zero byte raises
    irq.io_write(11, (1).to_bytes(4, "little"))              # realmode's outl to 0x200b
    assert calls == [(3, 1), (11, 1), (12, 0), (13, 0), (14, 0)]
    assert dev.counters["irq_levels"] == (1 << 3) | (1 << 11)
    assert dev.counters["irq_raises"] == 2
    irq.io_write(11, b"\0")
    irq.io_write(22, b"\x01\x01\x01")                        # lines 22, 23; the third byte is past 0x2017
    assert calls[-2:] == [(22, 1), (23, 1)]
    assert dev.counters["irq_levels"] == (1 << 3) | (3 << 22)
    assert irq.io_read(3, 1) == b"\0" and irq.io_read(23, 2) == b"\0\xff"


def test_testdev_irq_lines_without_an_irqchip_are_recorded() -> None:
    dev = PcTestdev()
    regions(dev)["irq"][3].io_write(0, b"\x01")
    assert dev.counters["irq_levels"] == 1 and dev.counters["irq_raises"] == 1


def test_testdev_ioram_reads_back_what_was_written() -> None:
    dev = PcTestdev()
    mem = regions(dev)["iomem"][3]
    assert mem.io_read(0, 8) == bytes(8)
    mem.io_write(0x10, bytes(range(1, 9)))
    assert mem.io_read(0x12, 4) == bytes([3, 4, 5, 6])
    mem.io_write(IORAM_LEN - 2, b"\xaa\xbb\xcc\xdd")         # the part past the end is dropped
    assert mem.io_read(IORAM_LEN - 2, 4) == b"\xaa\xbb\0\0"
    assert dev.counters["iomem_writes"] == 2 and dev.counters["iomem_reads"] == 3


# ---------------------------------------------------------------- exit ports

@pytest.mark.parametrize("data,status", [(b"\0\0\0\0", 1), (b"\x01\0\0\0", 3), (b"\x7f", 0xFF), (b"\x34\x12", 0x2469),
                                         (b"\xff\xff\xff\xff", 0x1_FFFF_FFFF)])
def test_isa_debug_exit_status(data: bytes, status: int) -> None:
    dev = IsaDebugExit(iobase=0xF4, iosize=4)
    with pytest.raises(GuestExit) as e:
        dev.io_write(1, data)
    assert (e.value.reason, e.value.code) == ("isa-debug-exit", status)
    assert f"port 0xf5: QEMU exits with status {status & 0xFF}" in e.value.detail
    assert dev.io_read(0, 4) == bytes(4) and dev.size == 4


def test_bochs_shutdown_needs_the_whole_string_in_a_row() -> None:
    dev = BochsShutdown()
    for b in b"ShutXdownSShutdow":                           # a stray byte resets the match
        dev.io_write(0, bytes([b]))
    with pytest.raises(GuestExit) as e:
        for b in b"nShutdown":                                # 'n' ends nothing: the match had reset
            dev.io_write(0, bytes([b]))
    assert e.value.reason == "bochs-shutdown" and e.value.code is None
    assert dev.counters["writes"] == 17 + 9


# ---------------------------------------------------------------- PM timer and ACPI tables

def test_pm_timer_counts_24_bits_at_3_579545_mhz() -> None:
    assert pm_tmr_value(0) == 0
    assert pm_tmr_value(1_000_000_000) == 3_579_545
    assert pm_tmr_value(279) == 0 and pm_tmr_value(280) == 1        # 1 tick = 279.4 ns
    wrap = (1 << 24) * 1_000_000_000 // 3_579_545 + 1
    assert pm_tmr_value(wrap) == 0 and pm_tmr_value(wrap - 1) == 0xFFFFFF


def test_pm_timer_reads_virtual_time() -> None:
    insns = [0]
    dev = AcpiPmTimer()
    dev.connect(Platform(clock_ns=insn_clock_ns(lambda: insns[0])))
    assert dev.io_read(0, 4) == bytes(4)
    insns[0] = 10_000_000                                     # 10 ms of 1 ns instructions
    assert dev.io_read(0, 4) == (35_795).to_bytes(4, "little")
    assert dev.io_read(1, 1) == bytes([35_795 >> 8])          # byte k of the 32-bit register
    assert dev.io_read(2, 2) == bytes(2)
    dev.io_write(0, b"\1\2\3\4")                              # read-only
    assert dev.counters == {"reads": 4, "last_value": 35_795}


def _tables(base: int, timer: int) -> tuple[bytes, dict[str, int]]:
    blob = build_acpi_tables(base, timer)
    rsdt = struct.unpack_from("<I", blob, 16)[0]
    n = (struct.unpack_from("<I", blob, rsdt - base + 4)[0] - 36) // 4
    found = {blob[a - base:a - base + 4].decode(): a for a in struct.unpack_from(f"<{n}I", blob, rsdt - base + 36)}
    return blob, {"RSDT": rsdt, **found}


def test_acpi_tables_as_lib_acpi_walks_them() -> None:
    base = 0xF0000
    blob, at = _tables(base, 0xB008)
    assert blob[:8] == b"RSD PTR " and sum(blob[:20]) & 0xFF == 0 and blob[15] == 0   # ACPI 1.0
    assert list(at) == ["RSDT", "FACP"]
    for sig in ("RSDT", "FACP"):
        off = at[sig] - base
        length = struct.unpack_from("<I", blob, off + 4)[0]
        assert blob[off:off + 4] == sig.encode() and sum(blob[off:off + length]) & 0xFF == 0
    fadt = at["FACP"] - base
    assert struct.unpack_from("<I", blob, fadt + 4)[0] == 116                  # revision 1 length
    facs, dsdt = struct.unpack_from("<II", blob, fadt + 36)
    assert struct.unpack_from("<I", blob, fadt + 76)[0] == 0xB008 and blob[fadt + 91] == 4
    assert facs % 64 == 0 and blob[facs - base:facs - base + 8] == b"FACS\x40\0\0\0"
    assert blob[dsdt - base:dsdt - base + 4] == b"DSDT"


def test_acpi_fadt_without_a_timer() -> None:
    blob, at = _tables(0xE0000, 0)
    fadt = at["FACP"] - 0xE0000
    assert struct.unpack_from("<I", blob, fadt + 76)[0] == 0 and blob[fadt + 91] == 0


def test_device_types_table() -> None:
    assert {"fw-cfg", "pc-testdev", "isa-debug-exit", "bochs-shutdown", "acpi-pm-timer"} <= set(DEVICE_TYPES)
