"""An example Python device for kvmsim scenarios (`type: python`): a CRC-32 engine.

Registers (offsets from the device's gpa or port):
    0x0  DATA   write: feed the written bytes (1, 2, 4 or 8 of them, little-endian) into the CRC
    0x4  CRC    read: the CRC-32 of the bytes fed so far
    0x8  RESET  write: start over
The protocol kvmsim expects (see kvmsim/vmm/devices/python.py): read(offset, size) -> int,
write(offset, size, value), and optionally state() -> dict of ints for expect.devices.
"""

from __future__ import annotations


class Crc32:
    """Reflected CRC-32; `poly` comes from the scenario's args (0xedb88320 is zlib's)."""

    DATA, CRC, RESET = 0x0, 0x4, 0x8

    def __init__(self, poly: int = 0xEDB88320) -> None:
        if not 0 < poly < 1 << 32:
            raise ValueError(f"poly must be a non-zero 32-bit value, got {poly:#x}")
        self.poly = poly
        self.crc = 0xFFFFFFFF
        self.fed = 0

    def _feed(self, byte: int) -> None:
        self.crc ^= byte
        for _ in range(8):
            self.crc = (self.crc >> 1) ^ (self.poly if self.crc & 1 else 0)
        self.fed += 1

    def read(self, offset: int, size: int) -> int:
        value = self.crc ^ 0xFFFFFFFF if offset == self.CRC else 0
        return value & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == self.DATA:
            for b in value.to_bytes(size, "little"):
                self._feed(b)
        elif offset == self.RESET:
            self.crc, self.fed = 0xFFFFFFFF, 0

    def state(self) -> dict[str, int]:
        return {"bytes_fed": self.fed, "crc": self.crc ^ 0xFFFFFFFF}
