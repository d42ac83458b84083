"""A minimal set of ACPI tables in guest RAM, as firmware leaves them (the part of QEMU +
SeaBIOS's tables that kvm-unit-tests reads: lib/acpi.c finds the RSDP by scanning
0xe0000-0xfffff on 16-byte steps, then RSDT -> FADT; `vmexit inl_pmtimer` reads the PM
timer's port from FADT.pm_tmr_blk, s3 reads FADT and FACS).

Layout, from `base` (16-byte aligned, inside the BIOS area): RSDP (ACPI 1.0, 20 bytes), FACS
(64-byte aligned), DSDT (a header with no AML), FADT (revision 1, 116 bytes), RSDT (one entry,
the FADT).  Not built: MADT, HPET, MCFG, SSDTs (the model has no device they would describe).
"""

from __future__ import annotations

import struct

RSDP_SCAN_START, RSDP_SCAN_END = 0xE0000, 0x100000   # where lib/acpi.c (and an OS) look
OEM_ID, OEM_TABLE_ID, CREATOR_ID = b"KVMSIM", b"KVMSIMPC", b"KVMS"
HEADER_LEN = 36
FADT_REV1_LEN = 116
FACS_LEN = 64


def _checksum(data: bytes) -> int:
    """The byte that makes the sum of all bytes 0 mod 256."""
    return -sum(data) & 0xFF


def _table(sig: bytes, revision: int, body: bytes) -> bytes:
    """ACPI_TABLE_HEADER_DEF + body, checksummed."""
    head = struct.pack("<4sIBB6s8sI4sI", sig, HEADER_LEN + len(body), revision, 0, OEM_ID, OEM_TABLE_ID,
                       1, CREATOR_ID, 1)
    t = bytearray(head + body)
    t[9] = _checksum(bytes(t))
    return bytes(t)


def _fadt(facs: int, dsdt: int, pm_tmr_blk: int) -> bytes:
    """FADT revision 1: the DSDT/FACS pointers and the PM timer; the other PM blocks are 0 (the
    model has no PM1 event/control or GPE registers)."""
    body = bytearray(FADT_REV1_LEN - HEADER_LEN)
    struct.pack_into("<II", body, 0, facs, dsdt)                  # firmware_ctrl, dsdt
    struct.pack_into("<I", body, 76 - HEADER_LEN, pm_tmr_blk)     # pm_tmr_blk
    body[91 - HEADER_LEN] = 4 if pm_tmr_blk else 0                # pm_tmr_len
    return _table(b"FACP", 1, bytes(body))


def _facs() -> bytes:
    """FACS: no checksum, signature and length only."""
    return struct.pack("<4sI", b"FACS", FACS_LEN).ljust(FACS_LEN, b"\0")


def _rsdp(rsdt: int) -> bytes:
    r = bytearray(struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, 0, rsdt))
    r[8] = _checksum(bytes(r))
    return bytes(r)


def _align(v: int, a: int) -> int:
    return (v + a - 1) & -a


def build_acpi_tables(base: int, pm_tmr_blk: int = 0) -> bytes:
    """The tables as one blob to copy to guest-physical `base` (the RSDP's address)."""
    facs = _align(base + 20, 64)
    dsdt = facs + FACS_LEN
    fadt = dsdt + HEADER_LEN
    rsdt = fadt + FADT_REV1_LEN
    blob = bytearray(rsdt + HEADER_LEN + 4 - base)
    blob[0:20] = _rsdp(rsdt)
    blob[facs - base:dsdt - base] = _facs()
    blob[dsdt - base:fadt - base] = _table(b"DSDT", 1, b"")
    blob[fadt - base:rsdt - base] = _fadt(facs, dsdt, pm_tmr_blk)
    blob[rsdt - base:] = _table(b"RSDT", 1, struct.pack("<I", fadt))
    return bytes(blob)


def acpi_tables_size(base: int) -> int:
    """Bytes build_acpi_tables(base) writes (the schema checks that they fit in RAM)."""
    return len(build_acpi_tables(base))
