"""Small devices for tests: debug-exit port, MMIO register bank, test-report port, fixed-value port."""

from __future__ import annotations


class GuestExit(Exception):
    """The guest asked the VMM to stop, with a code; `reason` becomes the run's Stop reason
    (debug-exit, isa-debug-exit, bochs-shutdown: vmm/devices/exit_ports.py)."""

    def __init__(self, code: int | None, reason: str = "debug-exit", detail: str = "") -> None:
        super().__init__(code)
        self.code, self.reason, self.detail = code, reason, detail


class DebugExit:
    """isa-debug-exit style: a write ends the run with the value written."""

    def __init__(self, name: str = "debug-exit", size: int = 4, **_: object) -> None:
        self.name, self.size = name, size
        self.counters = {"writes": 0}

    def io_read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def io_write(self, offset: int, data: bytes) -> None:
        self.counters["writes"] += 1
        raise GuestExit(int.from_bytes(data, "little"))


class RegBank:
    """MMIO registers with initial values; counts every read and write (data integrity tests).

    `log` holds the first LOG_LIMIT accesses (kind, offset, bytes), so a long run stays flat in
    memory; the counters count all of them.
    """

    LOG_LIMIT = 4096

    def __init__(self, name: str = "regbank", size: int = 0x1000, values: dict[int, int] | None = None,
                 width: int = 4, **_: object) -> None:
        self.name, self.size, self.width = name, size, width
        self.mem = bytearray(size)
        for off, val in (values or {}).items():
            self.mem[off:off + width] = (val & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        self.counters = {"reads": 0, "writes": 0, "read_bytes": 0, "write_bytes": 0}
        self.log: list[tuple[str, int, bytes]] = []

    def io_read(self, offset: int, size: int) -> bytes:
        c = self.counters
        c["reads"] += 1
        c["read_bytes"] += size
        data = bytes(self.mem[offset:offset + size])
        if len(data) != size:
            data = data.ljust(size, b"\0")
        if len(self.log) < self.LOG_LIMIT:
            self.log.append(("r", offset, data))
        return data

    def io_write(self, offset: int, data: bytes) -> None:
        self.counters["writes"] += 1
        self.counters["write_bytes"] += len(data)
        self.mem[offset:offset + len(data)] = data[: max(0, self.size - offset)]
        if len(self.log) < self.LOG_LIMIT:
            self.log.append(("w", offset, bytes(data)))


class TestReport:
    """kvm-unit-tests style report port: write 1 = pass, 0 = fail (one per test)."""

    size = 4

    def __init__(self, name: str = "test-report", **_: object) -> None:
        self.name = name
        self.counters = {"pass": 0, "fail": 0}

    def io_read(self, offset: int, size: int) -> bytes:
        return bytes(size)

    def io_write(self, offset: int, data: bytes) -> None:
        self.counters["pass" if int.from_bytes(data, "little") else "fail"] += 1


class PortValue:
    """An input port that always reads as `value` (e.g. a status register)."""

    def __init__(self, name: str = "port-value", size: int = 1, value: int = 0, **_: object) -> None:
        self.name, self.size, self.value = name, size, value
        self.counters = {"reads": 0, "writes": 0}

    def io_read(self, offset: int, size: int) -> bytes:
        self.counters["reads"] += 1
        return (self.value >> (8 * offset) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def io_write(self, offset: int, data: bytes) -> None:
        self.counters["writes"] += 1
