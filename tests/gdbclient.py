"""A small GDB remote protocol client for the stub's tests, and a fake Target to serve."""

from __future__ import annotations

import socket
import threading

from kvmsim.debug.gdbstub import GdbStub, TargetStop, checksum, listen, serve_forever


class RspClient:
    """Speaks to the stub as gdb does: framed packets, acks until no-ack mode."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as gdb does
        self.buf = b""
        self.ack = True
        self.acks: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def _byte(self) -> bytes:
        if not self.buf:
            self.buf = self.sock.recv(65536)
            if not self.buf:
                raise EOFError
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> None:
        self.sock.sendall(b"$" + payload + b"#%02x" % checksum(payload))
        if self.ack:
            self.acks.append(self._byte())

    def recv(self) -> bytes:
        while (b := self._byte()) != b"$":
            pass
        body = b""
        while (b := self._byte()) != b"#":
            body += b
        given = self._byte() + self._byte()
        assert int(given, 16) == checksum(body), (body, given)
        if self.ack:
            self.sock.sendall(b"+")
        return body

    def ask(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.recv()

    def ask_console(self, payload: bytes) -> tuple[str, bytes]:
        """Send a packet whose reply may be preceded by O (console output) packets."""
        self.send(payload)
        text = ""
        while True:
            r = self.recv()
            if r.startswith(b"O") and r != b"OK":
                text += bytes.fromhex(r[1:].decode()).decode()
                continue
            return text, r


class FakeTarget:
    """A Target with a dict of registers and a flat memory, for protocol tests."""

    def __init__(self, mode: str = "long64") -> None:
        self._mode = mode
        self.regs = {"rax": 0x1122334455667788, "rbx": 2, "rcx": 3, "rdx": 4, "rsi": 5, "rdi": 6,
                     "rbp": 0x7000, "rsp": 0x8000, "rip": 0x100000, "rflags": 0x202, "cs": 8, "ss": 0x10,
                     "ds": 0x10, "es": 0x10, "fs": 0, "gs": 0, "fs_base": 0, "gs_base": 0x1234,
                     **{f"r{i}": i for i in range(8, 16)}}
        self.mem = bytearray(range(256)) * 16          # linear 0x100000 .. +4K
        self.base = 0x100000
        self.breaks: set[tuple[str, int]] = set()
        self.stops: list[TargetStop] = []
        self.resumed: list[bool] = []
        self.monitored: list[str] = []
        self.killed = self.detached = False
        self.interrupted = threading.Event()

    def mode(self) -> str:
        return self._mode

    def read_reg(self, name: str) -> int | None:
        return self.regs.get(name)

    def write_reg(self, name: str, value: int) -> bool:
        if name not in self.regs:
            return False
        self.regs[name] = value
        return True

    def read_mem(self, addr: int, size: int) -> bytes:
        lo = addr - self.base
        if lo < 0 or lo >= len(self.mem):
            return b""
        return bytes(self.mem[lo:lo + size])

    def write_mem(self, addr: int, data: bytes) -> bool:
        lo = addr - self.base
        if lo < 0 or lo + len(data) > len(self.mem):
            return False
        self.mem[lo:lo + len(data)] = data
        return True

    def insert_break(self, kind: str, addr: int) -> bool:
        self.breaks.add((kind, addr))
        return True

    def remove_break(self, kind: str, addr: int) -> bool:
        if (kind, addr) not in self.breaks:
            return False
        self.breaks.remove((kind, addr))
        return True

    def resume(self, step: bool) -> TargetStop:
        self.resumed.append(step)
        if self.stops:
            return self.stops.pop(0)
        self.interrupted.wait(10)                     # runs until gdb interrupts
        self.interrupted.clear()
        return TargetStop("interrupt")

    def interrupt(self) -> None:
        self.interrupted.set()

    def monitor(self, command: str) -> str:
        self.monitored.append(command)
        return f"did {command}"

    def kill(self) -> None:
        self.killed = True

    def detach(self) -> None:
        self.detached = True


def start_stub(target) -> tuple[GdbStub, int, threading.Thread]:
    """Serve `target` on an ephemeral 127.0.0.1 port in a background thread."""
    server = listen("127.0.0.1", 0)
    port = server.getsockname()[1]
    stub = GdbStub(target)
    th = threading.Thread(target=serve_forever, args=(stub, server), daemon=True)
    th.start()
    return stub, port, th
