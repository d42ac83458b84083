"""The GDB Remote Serial Protocol for the guest vCPU: `kvmsim debug FILE --gdb 127.0.0.1:1234`.

This module is the protocol only: packet framing, checksums and acks (and no-ack mode), the
packets gdb sends a bare-metal target, and the stop replies.  What it debugs is a `Target`
(read and write registers and guest memory, breakpoints, resume): `debug/gdbtarget.py` adapts
the kvmsim Debugger to it, so gdb drives the same engine, breakpoints and single steps as the
REPL, and any REPL command works as `monitor CMD` (qRcmd).

Addresses are linear addresses (segment base included, through the guest's page tables when
paging is on), as in QEMU's gdbstub; registers are the raw vCPU values, so in real mode `$pc`
is IP and a breakpoint on a symbol means the linear address the image is linked at.

The register file follows the CPU mode: i386 outside 64-bit mode, i386:x86-64 in it
(gdbregs.py).  gdb reads the target description once per connection, and its remote protocol
has no packet that says the architecture changed, so the stub keeps serving the layout gdb read
(registers stay consistent) and, at the first stop in the other mode, says so on gdb's console
(an `O` packet).  gdb then re-reads the description when it connects again: `disconnect`
(the guest stays stopped, the stub waits for the next connection) and `target remote` again.
(QEMU's x86 stub serves one fixed description instead, the 64-bit one in qemu-system-x86_64, and
leaves 16/32-bit code to `set architecture`.)
"""

from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from kvmsim.debug.gdbregs import I386, Layout, layout_for, target_xml

PACKET_SIZE = 0x4000        # the most payload we accept (qSupported PacketSize)
SIGTRAP, SIGINT = 5, 2
THREAD = 1                  # the one vCPU, as gdb's thread 1
_WIDE = frozenset(("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip", "rflags"))


@dataclass(frozen=True, slots=True)
class TargetStop:
    """Why the guest stopped.  kind: start | sw-break | hw-break | step | exit-break | interrupt |
    ended (the run is over: `code` is the guest's exit code, `detail` the stop reason)."""

    kind: str
    detail: str = ""
    code: int = 0


class Target(Protocol):
    """What the stub debugs: one stopped vCPU.  Addresses are linear."""

    def mode(self) -> str: ...                                    # SiliconVcpu.mode() names
    def read_reg(self, name: str) -> int | None: ...              # gdbregs GdbReg.src names; None: unavailable
    def write_reg(self, name: str, value: int) -> bool: ...
    def read_mem(self, addr: int, size: int) -> bytes: ...        # the readable prefix
    def write_mem(self, addr: int, data: bytes) -> bool: ...
    def insert_break(self, kind: str, addr: int) -> bool: ...     # kind: "sw" | "hw"
    def remove_break(self, kind: str, addr: int) -> bool: ...
    def resume(self, step: bool) -> TargetStop: ...               # blocks until the next stop
    def interrupt(self) -> None: ...                              # from another thread: stop soon
    def monitor(self, command: str) -> str: ...                   # a REPL command; its output
    def kill(self) -> None: ...
    def detach(self) -> None: ...                                 # run on to the end, undebugged


class Disconnected(Exception):
    """gdb went away (EOF or a socket error)."""


# ---------------------------------------------------------------- framing

def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFF


def escape(data: bytes) -> bytes:
    """Binary data in a reply: '#', '$', '}' and '*' are sent as '}' then the byte XOR 0x20."""
    out = bytearray()
    for b in data:
        if b in b"#$}*":
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out, it = bytearray(), iter(data)
    for b in it:
        out.append((next(it, 0) ^ 0x20) if b == 0x7D else b)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#%02x" % checksum(payload)


class RspConnection:
    """One gdb connection: packets in and out, acks until QStartNoAckMode."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.ack = True
        self.lock = threading.Lock()     # the interrupt watcher reads while the guest runs

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except OSError as e:
            raise Disconnected(str(e)) from None
        if not data:
            raise Disconnected("EOF")
        self.buf += data

    def read_packet(self) -> bytes:
        """The next packet's payload; b"\\x03" for an interrupt.  Bad checksums get a '-'."""
        while True:
            while not self.buf:
                self._fill()
            c = self.buf[0]
            if c == 0x03:
                del self.buf[0]
                return b"\x03"
            if c != ord("$"):
                del self.buf[0]          # '+', '-' and line noise between packets
                continue
            end = self.buf.find(b"#")
            while end < 0 or len(self.buf) < end + 3:
                if len(self.buf) > PACKET_SIZE * 2 + 16:
                    self.buf.clear()     # no '#' in sight: drop it, gdb will retransmit
                    break
                self._fill()
                end = self.buf.find(b"#")
            if not self.buf:
                continue
            payload, given = bytes(self.buf[1:end]), bytes(self.buf[end + 1:end + 3])
            del self.buf[:end + 3]
            try:
                ok = int(given, 16) == checksum(payload)
            except ValueError:
                ok = False
            if self.ack:
                self._send_raw(b"+" if ok else b"-")
            if ok or not self.ack:
                return payload

    def _send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Disconnected(str(e)) from None

    def send_packet(self, payload: bytes) -> None:
        """Send one packet; in ack mode wait for '+' (resend on '-')."""
        with self.lock:
            for _ in range(10):
                self._send_raw(frame(payload))
                if not self.ack:
                    return
                while True:
                    while not self.buf:
                        self._fill()
                    c = self.buf[0]
                    if c in b"+-":
                        del self.buf[0]
                        break
                    if c == 0x03:            # an interrupt racing the reply: keep it for later
                        break
                    return                   # gdb sent a packet instead of an ack: take it as acked
                if c == ord("+") or c == 0x03:
                    return
            raise Disconnected("gdb keeps rejecting our packets")

    def interrupt_pending(self, timeout: float) -> bool:
        """While the guest runs: did gdb send Ctrl-C (0x03)?"""
        with self.lock:
            if not self.buf:
                try:
                    ready, _, _ = select.select([self.sock], [], [], timeout)
                except (OSError, ValueError):
                    return False
                if not ready:
                    return False
                try:
                    data = self.sock.recv(4096)
                except OSError:
                    return False
                if not data:
                    return False
                self.buf += data
            i = self.buf.find(b"\x03")
            if i >= 0 and b"$" not in self.buf[:i]:
                del self.buf[i]
                return True
            return False


# ---------------------------------------------------------------- the packets

def _hex_le(value: int | None, size: int) -> bytes:
    if value is None:
        return b"xx" * size
    return (value & ((1 << 8 * size) - 1)).to_bytes(size, "little").hex().encode()


def _parse_addr_len(s: bytes) -> tuple[int, int]:
    a, n = s.split(b",", 1)
    return int(a, 16), int(n, 16)


class GdbStub:
    """Serves one Target to gdb connections, one at a time, until gdb kills or detaches."""

    def __init__(self, target: Target, log: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.log = log or (lambda _msg: None)
        self.stop = TargetStop("start")
        self.layout: Layout = I386
        self.noticed_mode: str | None = None     # the mode last told to gdb
        self.finished = False                    # k or D: the session is over
        self.peer_features: set[str] = set()
        self.conn: RspConnection | None = None

    # ------------------------------------------------------------ serving
    def serve(self, sock: socket.socket) -> None:
        """Serve one connected gdb until it disconnects, detaches or kills."""
        self.conn = conn = RspConnection(sock)
        self.layout = layout_for(self.target.mode())
        self.noticed_mode = None
        self.peer_features = set()
        try:
            while not self.finished:
                pkt = conn.read_packet()
                if pkt == b"\x03":
                    continue                     # the guest is stopped already
                reply = self.handle(pkt)
                if reply is not None:
                    conn.send_packet(reply)
                if pkt[:1] in (b"k",) or pkt.startswith(b"vKill"):
                    break
        except Disconnected:
            pass
        finally:
            self.conn = None
            if self.stop.kind == "ended":
                self.finished = True             # nothing left to debug: gdb saw the exit

    # ------------------------------------------------------------ dispatch
    def handle(self, pkt: bytes) -> bytes | None:
        """The reply to one packet (None: no reply)."""
        try:
            return self._handle(pkt)
        except (ValueError, IndexError, KeyError):
            return b"E01"                        # a malformed packet: an error reply, not a crash
        except Disconnected:
            raise
        except Exception as e:                   # a bug behind the packet: say so, keep the session
            self.log(f"gdb stub: {pkt[:40]!r} failed: {type(e).__name__}: {e}")
            return b"E01"

    def _handle(self, pkt: bytes) -> bytes | None:
        t = self.target
        c, rest = pkt[:1], pkt[1:]
        if pkt.startswith(b"qSupported"):
            return self._supported(pkt[len(b"qSupported"):])
        if pkt == b"QStartNoAckMode":
            self.conn and self.conn.send_packet(b"OK")
            if self.conn:
                self.conn.ack = False
            return None
        if pkt.startswith(b"qXfer:features:read:"):
            return self._xfer_features(pkt[len(b"qXfer:features:read:"):])
        if c == b"?":
            return self.stop_reply(self.stop)
        if c == b"g":
            return b"".join(_hex_le(t.read_reg(r.src), r.size) for r in self.layout.regs)
        if c == b"G":
            return self._write_all(bytes.fromhex(rest.decode()))
        if c == b"p":
            regs = self.layout.regs
            n = int(rest, 16)
            if n >= len(regs):
                return b"E45"
            return _hex_le(t.read_reg(regs[n].src), regs[n].size)
        if c == b"P":
            n, val = rest.split(b"=", 1)
            return self._write_reg(int(n, 16), bytes.fromhex(val.decode()))
        if c == b"m":
            addr, n = _parse_addr_len(rest)
            data = t.read_mem(addr, min(n, PACKET_SIZE // 2))
            return data.hex().encode() if data or not n else b"E14"
        if c == b"M":
            where, data = rest.split(b":", 1)
            addr, n = _parse_addr_len(where)
            return b"OK" if t.write_mem(addr, bytes.fromhex(data.decode())[:n]) else b"E14"
        if c == b"X":
            where, data = rest.split(b":", 1)
            addr, n = _parse_addr_len(where)
            return b"OK" if n == 0 or t.write_mem(addr, unescape(data)[:n]) else b"E14"
        if c in (b"Z", b"z"):
            kind, addr, _size = rest.split(b",", 2)
            which = {b"0": "sw", b"1": "hw"}.get(kind)
            if which is None:
                return b""                       # watchpoints: not supported
            op = t.insert_break if c == b"Z" else t.remove_break
            return b"OK" if op(which, int(addr, 16)) else b"E22"
        if pkt == b"vCont?":
            return b"vCont;c;C;s;S"
        if pkt.startswith(b"vCont;"):
            return self._vcont(pkt[len(b"vCont;"):])
        if c in (b"c", b"s", b"C", b"S"):
            addr = rest if c in (b"c", b"s") else rest.partition(b";")[2]
            if addr:
                t.write_reg("rip", int(addr, 16))
            return self._resume(step=c in (b"s", b"S"))
        if pkt.startswith(b"qRcmd,"):
            return self._monitor(bytes.fromhex(pkt[len(b"qRcmd,"):].decode()).decode(errors="replace"))
        if c == b"k" or pkt.startswith(b"vKill"):
            self.finished = True
            t.kill()
            return b"OK" if pkt.startswith(b"vKill") else None
        if c == b"D":
            self.finished = True
            t.detach()
            return b"OK"
        if c == b"H" or c == b"T":
            return b"OK"
        if pkt == b"qC":
            return b"QC%x" % THREAD
        if pkt == b"qfThreadInfo":
            return b"m%x" % THREAD
        if pkt == b"qsThreadInfo":
            return b"l"
        if pkt == b"qAttached":
            return b"1"                          # detach, not kill, when gdb quits
        if pkt.startswith(b"qSymbol"):
            return b"OK"
        return b""                               # unsupported: the empty reply

    def _supported(self, rest: bytes) -> bytes:
        self.peer_features = set()
        for item in rest.lstrip(b":").split(b";"):
            if item.endswith(b"+"):
                self.peer_features.add(item[:-1].decode(errors="replace"))
        feats = [b"PacketSize=%x" % PACKET_SIZE, b"qXfer:features:read+", b"vContSupported+",
                 b"QStartNoAckMode+"]
        feats += [f.encode() + b"+" for f in ("swbreak", "hwbreak") if f in self.peer_features]
        return b";".join(feats)

    def _xfer_features(self, args: bytes) -> bytes:
        annex, span = args.split(b":", 1)
        if annex != b"target.xml":
            return b"E00"
        off, n = _parse_addr_len(span)
        self.layout = layout_for(self.target.mode())   # what gdb now knows
        self.noticed_mode = self.target.mode()
        doc = target_xml(self.layout).encode()
        chunk = doc[off:off + n]
        return (b"l" if off + n >= len(doc) else b"m") + escape(chunk)

    def _write_reg(self, n: int, raw: bytes) -> bytes:
        regs = self.layout.regs
        if n >= len(regs) or len(raw) != regs[n].size:
            return b"E45"
        return b"OK" if self._store(regs[n], int.from_bytes(raw, "little")) else b"E45"

    def _store(self, r, value: int) -> bool:
        """Write one register; a 32-bit view of a 64-bit register keeps its high half (as QEMU)."""
        if r.src in _WIDE and r.bits < 64:
            old = self.target.read_reg(r.src) or 0
            value = (old & ~((1 << r.bits) - 1)) | value
        return self.target.write_reg(r.src, value)

    def _write_all(self, raw: bytes) -> bytes:
        off = 0
        for r in self.layout.regs:
            piece = raw[off:off + r.size]
            off += r.size
            if len(piece) < r.size:
                break
            value = int.from_bytes(piece, "little")
            old = self.target.read_reg(r.src)
            if old is not None and old & ((1 << r.bits) - 1) != value:    # only what gdb changed
                self._store(r, value)
        return b"OK"

    def _vcont(self, actions: bytes) -> bytes:
        for action in actions.split(b";"):
            what, _, thread = action.partition(b":")
            if thread and thread not in (b"-1", b"%x" % THREAD, b"p1.1", b"p1.-1"):
                continue
            if what[:1] in (b"c", b"C"):
                return self._resume(step=False)
            if what[:1] in (b"s", b"S"):
                return self._resume(step=True)
            if what[:1] == b"t":
                return self.stop_reply(TargetStop("interrupt"))
        return b"E01"

    # ------------------------------------------------------------ running
    def _resume(self, step: bool) -> bytes:
        if self.stop.kind == "ended":
            return self.stop_reply(self.stop)
        done = threading.Event()
        conn = self.conn

        def watch() -> None:                      # Ctrl-C from gdb while the guest runs
            while not done.is_set():
                if conn is not None and conn.interrupt_pending(0.05):
                    self.target.interrupt()
        watcher = threading.Thread(target=watch, name="gdb-interrupt", daemon=True)
        watcher.start()
        try:
            self.stop = self.target.resume(step)
        finally:
            done.set()
            watcher.join()
        return self.stop_reply(self.stop)

    def _console(self, text: str) -> None:
        """gdb's console: an `O` packet (allowed while the target runs, before the stop reply)."""
        if self.conn is not None and text:
            for i in range(0, len(text), PACKET_SIZE // 4):
                self.conn.send_packet(b"O" + text[i:i + PACKET_SIZE // 4].encode().hex().encode())

    def stop_reply(self, stop: TargetStop) -> bytes:
        if stop.kind == "ended":
            self._console(f"kvmsim: {stop.detail}\n" if stop.detail else "")
            return b"W%02x" % (stop.code & 0xFF)
        mode = self.target.mode()
        if self.noticed_mode is not None and layout_for(mode) is not self.layout:
            self._console(f"kvmsim: the vCPU is now in {mode} mode ({layout_for(mode).arch}); gdb keeps "
                          f"the {self.layout.arch} registers until it reconnects: 'disconnect', then "
                          f"'target remote' again\n")
            self.noticed_mode = mode
        if stop.kind == "exit-break" and stop.detail:
            self._console(f"kvmsim: {stop.detail}\n")
        sig = SIGINT if stop.kind == "interrupt" else SIGTRAP
        out = b"T%02xthread:%x;" % (sig, THREAD)
        layout = self.layout
        for name in (layout.regs[layout.index("eip" if layout is I386 else "rip")].name,
                     "esp" if layout is I386 else "rsp", "ebp" if layout is I386 else "rbp"):
            n = layout.index(name)
            r = layout.regs[n]
            out += b"%02x:%s;" % (n, _hex_le(self.target.read_reg(r.src), r.size))
        if stop.kind == "sw-break" and "swbreak" in self.peer_features:
            out += b"swbreak:;"
        elif stop.kind == "hw-break" and "hwbreak" in self.peer_features:
            out += b"hwbreak:;"
        return out

    def _monitor(self, command: str) -> bytes:
        out = self.target.monitor(command.strip())
        if out and not out.endswith("\n"):
            out += "\n"
        if not out:
            return b"OK"
        return out.encode().hex().encode()   # the output itself as the final reply (gdb prints it)


# ---------------------------------------------------------------- listening

def parse_endpoint(spec: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (host 127.0.0.1 by default); ValueError when malformed."""
    host, _, port = spec.rpartition(":")
    host = host.strip("[]")                  # [::1]:1234
    n = int(port)
    if not 0 <= n <= 65535:
        raise ValueError(f"port {n} out of range")
    return host or "127.0.0.1", n


def listen(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1)
    return s


def serve_forever(stub: GdbStub, server: socket.socket) -> None:
    """Accept gdb connections one after another until one kills or detaches the guest."""
    while not stub.finished:
        sock, peer = server.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stub.log(f"gdb connected from {peer[0]}:{peer[1]}")
        try:
            stub.serve(sock)
        finally:
            sock.close()
        if not stub.finished:
            stub.log("gdb disconnected; the guest stays stopped, waiting for the next connection")
    server.close()
