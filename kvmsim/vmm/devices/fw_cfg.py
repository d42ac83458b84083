"""QEMU's fw_cfg on port I/O (hw/nvram/fw_cfg.c, the x86 items of hw/i386/fw_cfg.c).

The guest writes a 16-bit key to the selector (0x510) and then reads the item a byte at a time
from the data port (0x511); each read advances within the item, and reads past its end (or of a
key with no item) answer 0.  On x86 the two ports are one 2-byte region: a byte read at either
port reads data, a 16-bit write at either port selects, and a byte write is the (long
unsupported) data write, which does nothing.  kvm-unit-tests reads FW_CFG_NB_CPUS,
FW_CFG_RAM_SIZE and FW_CFG_MAX_RAM through it (lib/x86/fwcfg.c).
"""

from __future__ import annotations

from enum import IntEnum

FW_CFG_IO_BASE = 0x510
FW_CFG_CTL_SIZE = 2          # selector and data share these two ports


class FwCfgKey(IntEnum):
    """Item keys, QEMU's FW_CFG_* (include/standard-headers/linux/qemu_fw_cfg.h)."""

    SIGNATURE = 0x00
    ID = 0x01
    UUID = 0x02
    RAM_SIZE = 0x03
    NOGRAPHIC = 0x04
    NB_CPUS = 0x05
    BOOT_MENU = 0x0E
    MAX_CPUS = 0x0F
    IRQ0_OVERRIDE = 0x8002    # FW_CFG_ARCH_LOCAL + 2


FW_CFG_ARCH_LOCAL = 0x8000
FW_CFG_WRITE_CHANNEL = 0x4000
FW_CFG_ENTRY_MASK = 0xFFFF & ~(FW_CFG_WRITE_CHANNEL | FW_CFG_ARCH_LOCAL)
FW_CFG_VERSION = 0x01        # FW_CFG_ID bit 0: the traditional port interface
# Not modelled: the DMA interface (port 0x514; FW_CFG_ID bit 1 stays clear so a guest does not try
# it), the file directory (0x19) and the files under it (e820, ACPI, SMBIOS), NUMA, HPET, the
# multiboot kernel items (-kernel's KERNEL_ADDR/DATA).  A key without an item reads as 0s: so
# kvm-unit-tests' FW_CFG_MAX_RAM (0x11, KERNEL_DATA's key under QEMU) reads 0, "no limit".


def fw_cfg_items(nb_cpus: int, max_cpus: int, ram_size: int) -> dict[int, bytes]:
    """The items fw_cfg_common_realize and fw_cfg_arch_create add, as little-endian bytes."""

    def le(v: int, n: int) -> bytes:
        return v.to_bytes(n, "little")

    return {
        FwCfgKey.SIGNATURE:     b"QEMU",
        FwCfgKey.ID:            le(FW_CFG_VERSION, 4),
        FwCfgKey.UUID:          bytes(16),
        FwCfgKey.RAM_SIZE:      le(ram_size, 8),
        FwCfgKey.NOGRAPHIC:     le(1, 2),            # -display none
        FwCfgKey.NB_CPUS:       le(nb_cpus, 2),
        FwCfgKey.BOOT_MENU:     le(0, 2),
        FwCfgKey.MAX_CPUS:      le(max_cpus, 2),     # QEMU's apic_id_limit; with one socket, = max_cpus
        FwCfgKey.IRQ0_OVERRIDE: le(1, 4),
    }


class FwCfg:
    """The fw_cfg "comb" region: selector + data on ports base, base+1."""

    size = FW_CFG_CTL_SIZE

    def __init__(self, name: str = "fw-cfg", nb_cpus: int = 1, max_cpus: int | None = None,
                 ram_size: int = 0, **_: object) -> None:
        self.name = name
        self.items = fw_cfg_items(nb_cpus, max_cpus if max_cpus is not None else nb_cpus, ram_size)
        self.cur_entry = int(FwCfgKey.SIGNATURE)    # fw_cfg_reset selects the signature
        self.cur_offset = 0
        self.counters = {"selects": 0, "reads": 0, "last_key": FwCfgKey.SIGNATURE}

    def select(self, key: int) -> None:
        """fw_cfg_select: offset back to 0; the write-channel bit is dropped from the key."""
        self.cur_offset = 0
        self.counters["selects"] += 1
        self.counters["last_key"] = key
        self.cur_entry = (key & FW_CFG_ARCH_LOCAL) | (key & FW_CFG_ENTRY_MASK)

    def data_read(self) -> int:
        """fw_cfg_data_read for one byte: the next byte of the item, 0 past its end."""
        item = self.items.get(self.cur_entry)
        self.counters["reads"] += 1
        if item is None or self.cur_offset >= len(item):
            return 0
        self.cur_offset += 1
        return item[self.cur_offset - 1]

    def io_read(self, offset: int, size: int) -> bytes:
        if size != 1:            # fw_cfg_comb_valid refuses it: QEMU answers an invalid access with 0
            return bytes(size)
        return bytes([self.data_read()])

    def io_write(self, offset: int, data: bytes) -> None:
        if len(data) == 2:       # fw_cfg_comb_write: a 16-bit write selects, whichever port
            self.select(int.from_bytes(data, "little"))
        # size 1: fw_cfg_write, a no-op since QEMU 2.4; size 4: not accepted, dropped
