"""A 16550 UART, transmit side (kvmtool hw/serial.c): THR captured, LSR always ready."""

from __future__ import annotations

UART_RX, UART_IER, UART_IIR, UART_LCR, UART_MCR, UART_LSR, UART_MSR, UART_SCR = range(8)
UART_LSR_THRE_TEMT = 0x60   # transmitter holding register and shifter empty
UART_LCR_DLAB = 0x80


class Serial16550:
    size = 8

    def __init__(self, name: str = "serial16550", **_: object) -> None:
        self.name = name
        self.out = bytearray()
        self.regs = bytearray(8)
        self.dll = self.dlm = 0
        self.counters = {"tx_bytes": 0}

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace")

    def io_read(self, offset: int, size: int) -> bytes:
        if offset == UART_LSR:
            val = UART_LSR_THRE_TEMT
        elif offset == UART_IIR:
            val = 0x01  # no interrupt pending
        elif offset in (UART_RX, UART_IER) and self.regs[UART_LCR] & UART_LCR_DLAB:
            val = self.dll if offset == UART_RX else self.dlm
        elif offset == UART_RX:
            val = 0
        else:
            val = self.regs[offset]
        return bytes([val]) + bytes(size - 1)

    def io_write(self, offset: int, data: bytes) -> None:
        val = data[0]
        if offset == UART_RX and not self.regs[UART_LCR] & UART_LCR_DLAB:
            self.out.append(val)
            self.counters["tx_bytes"] += 1
        elif offset in (UART_RX, UART_IER) and self.regs[UART_LCR] & UART_LCR_DLAB:
            if offset == UART_RX:
                self.dll = val
            else:
                self.dlm = val
        else:
            self.regs[offset] = val
