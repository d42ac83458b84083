"""The GDB remote protocol layer (debug/gdbstub.py) against a fake Target, through a small client."""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET

import pytest

from gdbclient import FakeTarget, RspClient, start_stub
from kvmsim.debug.gdbregs import AMD64, I386, target_xml
from kvmsim.debug.gdbstub import TargetStop, checksum, escape, parse_endpoint, unescape


@pytest.fixture
def served():
    made = []

    def make(mode: str = "long64", stops: list[TargetStop] | None = None):
        t = FakeTarget(mode)
        t.stops = list(stops or [])
        stub, port, th = start_stub(t)
        c = RspClient(port)
        made.append(c)
        return t, stub, c
    yield make
    for c in made:
        c.close()


def read_xml(c: RspClient, chunk: int = 0x100) -> str:
    doc, off = b"", 0
    while True:
        r = c.ask(b"qXfer:features:read:target.xml:%x,%x" % (off, chunk))
        assert r[:1] in (b"m", b"l"), r
        doc += unescape(r[1:])
        off += chunk
        if r[:1] == b"l":
            return doc.decode()


def test_framing_acks_and_a_bad_checksum(served):
    t, stub, c = served()
    c.send_raw(b"$g#00")                       # wrong checksum: the stub asks again with '-'
    assert c._byte() == b"-"
    assert len(c.ask(b"g")) == 2 * sum(r.size for r in AMD64.regs)
    assert c.acks and set(c.acks) == {b"+"}


def test_qsupported_and_no_ack_mode(served):
    t, stub, c = served()
    feats = c.ask(b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386").split(b";")
    assert b"PacketSize=4000" in feats and b"qXfer:features:read+" in feats and b"vContSupported+" in feats
    assert b"swbreak+" in feats and b"hwbreak+" in feats
    assert c.ask(b"QStartNoAckMode") == b"OK"
    c.ack = False
    c.sock.sendall(b"$?#%02x" % checksum(b"?"))
    reply = c.recv()
    assert reply.startswith(b"T05thread:1;")
    c.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):        # nothing more: no '+' for our packet, none expected
        c._byte()


def test_swbreak_is_reported_only_when_gdb_offered_it(served):
    t, stub, c = served(stops=[TargetStop("sw-break"), TargetStop("sw-break")])
    assert b"swbreak+" not in c.ask(b"qSupported:multiprocess+")
    assert b"swbreak" not in c.ask(b"c")
    c.ask(b"qSupported:swbreak+")
    assert c.ask(b"c").endswith(b"swbreak:;")


@pytest.mark.parametrize("mode,layout", [("long64", AMD64), ("prot32", I386), ("real", I386)])
def test_target_xml_matches_the_g_packet(served, mode, layout):
    t, stub, c = served(mode)
    doc = read_xml(c, 0x80)
    root = ET.fromstring(doc.split("\n", 2)[2])   # past the XML declaration and DOCTYPE
    assert root.find("architecture").text == layout.arch
    regs = root.findall("./feature/reg")
    assert [r.get("name") for r in regs] == [r.name for r in layout.regs]
    g = c.ask(b"g")
    assert len(g) == 2 * sum(int(r.get("bitsize")) // 8 for r in regs)
    # The first register: rax (amd64) or eax = rax's low half (i386), little-endian.
    want = t.regs["rax"] if layout is AMD64 else t.regs["rax"] & 0xFFFF_FFFF
    size = layout.regs[0].size
    assert int.from_bytes(bytes.fromhex(g[:2 * size].decode()), "little") == want
    pc = layout.index("rip" if layout is AMD64 else "eip")
    assert int.from_bytes(bytes.fromhex(c.ask(b"p%x" % pc).decode()), "little") == t.regs["rip"]


def test_types_used_by_registers_are_defined():
    for layout in (I386, AMD64):
        doc = target_xml(layout)
        root = ET.fromstring(doc.split("\n", 2)[2])
        defined = {e.get("id") for e in root.iter() if e.get("id")}
        builtin = {"int", "int32", "int64", "data_ptr", "code_ptr", "i387_ext", "uint128"}
        assert {r.get("type") for r in root.iter("reg")} <= defined | builtin


def test_register_writes(served):
    t, stub, c = served("prot32")
    eax = I386.index("eax")
    assert c.ask(b"P%x=%s" % (eax, (0xDEADBEEF).to_bytes(4, "little").hex().encode())) == b"OK"
    assert t.regs["rax"] == 0x11223344DEADBEEF          # a 32-bit view keeps the high half
    assert c.ask(b"P%x=00" % eax) == b"E45"                # wrong size
    assert c.ask(b"P3e8=00000000") == b"E45"               # no such register
    g = bytearray(bytes.fromhex(c.ask(b"g").replace(b"xx", b"00").decode()))   # xx: unavailable
    ecx = 4 * I386.index("ecx")
    g[ecx:ecx + 4] = (0x77).to_bytes(4, "little")
    assert c.ask(b"G" + g.hex().encode()) == b"OK"
    assert t.regs["rcx"] == 0x77 and t.regs["rax"] == 0x11223344DEADBEEF


def test_memory_read_write_and_binary_write(served):
    t, stub, c = served()
    assert c.ask(b"m100004,4") == b"04050607"
    assert c.ask(b"M100000,3:aabbcc") == b"OK"
    assert t.mem[:3] == b"\xaa\xbb\xcc"
    payload = bytes([0x23, 0x24, 0x7D, 0x2A, 0x00])      # '#', '$', '}', '*' need escaping
    assert c.ask(b"X100010,5:" + escape(payload)) == b"OK"
    assert bytes(t.mem[0x10:0x15]) == payload
    assert c.ask(b"X100010,0:") == b"OK"                 # gdb's probe for X support
    assert c.ask(b"m200000,4") == b"E14"                 # nothing mapped there
    assert c.ask(b"M200000,1:00") == b"E14"
    assert c.ask(b"m100ffe,8") == b"feff"                # the readable prefix


def test_breakpoints(served):
    t, stub, c = served()
    assert c.ask(b"Z0,100010,1") == b"OK"
    assert c.ask(b"Z1,100020,1") == b"OK"
    assert t.breaks == {("sw", 0x100010), ("hw", 0x100020)}
    assert c.ask(b"z0,100010,1") == b"OK"
    assert t.breaks == {("hw", 0x100020)}
    assert c.ask(b"Z2,100030,4") == b""                  # watchpoints: unsupported (empty reply)


def test_vcont_step_and_continue(served):
    t, stub, c = served(stops=[TargetStop("step"), TargetStop("sw-break")])
    assert c.ask(b"vCont?") == b"vCont;c;C;s;S"
    r = c.ask(b"vCont;s:1;c")
    assert r.startswith(b"T05thread:1;")
    rip = AMD64.index("rip")
    assert (b"%02x:%s;" % (rip, t.regs["rip"].to_bytes(8, "little").hex().encode())) in r
    c.ask(b"vCont;c")
    assert t.resumed == [True, False]


def test_ctrl_c_interrupts_a_running_guest(served):
    t, stub, c = served()
    c.send(b"c")
    time.sleep(0.2)
    c.send_raw(b"\x03")
    assert c.recv().startswith(b"T02")


def test_monitor_run_end_kill(served):
    t, stub, c = served(stops=[TargetStop("ended", "run ended: debug-exit 3", 3)])
    out = c.ask(b"qRcmd," + b"vmcs".hex().encode())
    assert bytes.fromhex(out.decode()).decode() == "did vmcs\n"
    text, r = c.ask_console(b"c")
    assert r == b"W03" and "debug-exit 3" in text
    c.send(b"k")
    time.sleep(0.2)
    assert t.killed


def test_detach(served):
    t, stub, c = served()
    assert c.ask(b"D") == b"OK"
    time.sleep(0.1)
    assert t.detached and stub.finished


def test_mode_change_is_told_on_the_console_and_registers_keep_the_layout_read(served):
    t, stub, c = served("prot32", stops=[TargetStop("sw-break")])
    read_xml(c)
    t._mode = "long64"
    text, r = c.ask_console(b"c")
    assert "long64" in text and "i386:x86-64" in text and "disconnect" in text
    assert len(c.ask(b"g")) == 2 * sum(r.size for r in I386.regs)   # what gdb was told, still
    assert "x86-64" in read_xml(c)                                   # a re-read gets the new one
    assert len(c.ask(b"g")) == 2 * sum(r.size for r in AMD64.regs)


def test_malformed_packets_get_errors_and_the_session_lives(served):
    t, stub, c = served()
    for bad in (b"mzz,4", b"M1", b"Pzz", b"qRcmd,zz", b"Z0", b"vCont;x"):
        assert c.ask(bad)[:1] in (b"E", b""), bad
    assert c.ask(b"vMustReplyEmpty") == b""
    assert c.ask(b"m100000,2") == b"0001"


def test_disconnect_keeps_the_stub_waiting(served):
    t, stub, c = served()
    c.ask(b"Z0,100010,1")
    c.close()
    time.sleep(0.1)
    assert not stub.finished
    c2 = RspClient(c.port)
    assert c2.ask(b"?").startswith(b"T05")
    assert t.breaks == {("sw", 0x100010)}          # gdb's breakpoints stay until it removes them
    c2.close()


def test_parse_endpoint():
    assert parse_endpoint("127.0.0.1:1234") == ("127.0.0.1", 1234)
    assert parse_endpoint(":1234") == ("127.0.0.1", 1234)
    assert parse_endpoint("1234") == ("127.0.0.1", 1234)
    assert parse_endpoint("[::1]:1234") == ("::1", 1234)
    for bad in ("x:y", "1:99999", ""):
        with pytest.raises(ValueError):
            parse_endpoint(bad)
