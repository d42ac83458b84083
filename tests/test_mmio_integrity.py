"""Data integrity of the MMIO and string-I/O round trips (issue 5, item 6).

Device-side logs prove that every MMIO write reaches the device exactly once and every read
is satisfied exactly once, in guest program order: across ≤8-byte fragments, page
crossings, 16-byte moves, and REP restarts (reference §7.3-7.4, §9.7 step 10).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import make_machine, run_machine

REPO = Path(__file__).resolve().parents[1]
MODES = ("prot32", "long64")
BANK = 0xD0000000


def _run(sc, setup=None):
    m = make_machine(sc, "sim")
    try:
        if setup is not None:
            setup(m)
        res = run_machine(m)
        ram = {gpa: bytes(buf) for gpa, buf in m.ram}
        return res, m.devices, ram, m
    finally:
        m.close()


def _scenario_file(name: str):
    return load_scenario(REPO / "scenarios" / f"{name}.yaml")


def _inline(tmp_path: Path, mode: str, asm: str, devices: str) -> object:
    text = textwrap.dedent(f"""\
        name: integrity
        description: inline integrity guest
        guest:
          mode: {mode}
          asm: |
        """) + textwrap.indent(textwrap.dedent(asm), "    ") + textwrap.dedent(f"""\
        devices:
          - {{type: serial16550, port: 0x3f8}}
          - {{type: debug-exit, port: 0xf4}}
        """) + textwrap.indent(textwrap.dedent(devices), "  ")
    p = tmp_path / "integrity.yaml"
    p.write_text(text)
    return load_scenario(p)


def _log(dev) -> list[tuple[str, int, str]]:
    return [(kind, off, data.hex()) for kind, off, data in dev.log]


@pytest.mark.parametrize("mode", MODES)
def test_write_reaches_device_once_in_order(mode: str) -> None:
    res, devs, _, _ = _run(_scenario_file(f"mmio-write-{mode}"))
    assert res.stop.reason == "debug-exit" and res.stop.code == 0
    assert _log(devs["regbank"]) == [("w", 0x0, "11"), ("w", 0x2, "3322"), ("w", 0x4, "77665544"),
                                     ("r", 0x8, "5a000000"), ("w", 0x8, "5a010000"), ("r", 0x4, "77665544")]


@pytest.mark.parametrize("mode", MODES)
def test_page_cross_fragments_each_once(mode: str) -> None:
    res, devs, ram, _ = _run(_scenario_file(f"mmio-page-cross-{mode}"))
    assert res.stop.code == 0
    assert _log(devs["bank"]) == [("w", 0xFFE, "ddcc"), ("w", 0x1000, "bbaa"),
                                  ("r", 0xFFE, "ddcc"), ("r", 0x1000, "bbaa"),
                                  ("w", 0xFFD, "887766"), ("w", 0x1000, "5544332211")]
    assert _log(devs["edge"]) == [("w", 0x0, "bbaa"), ("r", 0x0, "bbaa")]
    assert ram[0][0x1FFFFE:0x200000] == bytes.fromhex("ddcc")   # the RAM half, written by KVM


@pytest.mark.parametrize("mode", MODES)
def test_sse_16_bytes_two_pieces_each_once(mode: str) -> None:
    res, devs, _, _ = _run(_scenario_file(f"mmio-16byte-sse-{mode}"))
    assert res.stop.code == 0
    assert _log(devs["regbank"]) == [("w", 0x0, "0001020304050607"), ("w", 0x8, "08090a0b0c0d0e0f"),
                                     ("r", 0x10, "3322110077665544"), ("r", 0x18, "bbaa9988ffeeddcc")]


REP_MOVS_ASM = """\
# inline guest (first line sets the YAML block indentation)
    .include "kvmsim.inc"
    .include "mmio.inc"
    .globl _start
_start:
    cld
    movl $0x120000, %edi          # RAM pattern: byte i = i * 7 + 3
    movl $N, %ecx
    movb $3, %al
1:  movb %al, (%edi)
    addb $7, %al
    incl %edi
    loop 1b
    BYMODE "movq $0x120000, %rsi", "movl $0x120000, %esi"
    BYMODE "movq $MMIO_BASE, %rdi", "movl $MMIO_BASE, %edi"
    movl $N, %ecx
    rep movsb                     # RAM → MMIO: every byte one write exit
    BYMODE "movq $MMIO_BASE, %rsi", "movl $MMIO_BASE, %esi"
    BYMODE "movq $0x130000, %rdi", "movl $0x130000, %edi"
    movl $N, %ecx
    rep movsb                     # MMIO → RAM: restarts in KVM, re-enters every 1024
    EXIT 0
"""


@pytest.mark.parametrize("mode", MODES)
def test_rep_movs_over_1024_bytes_each_byte_once(tmp_path: Path, mode: str) -> None:
    n = 1100
    sc = _inline(tmp_path, mode, REP_MOVS_ASM.replace("$N", f"${n}"),
                 "- {type: regbank, gpa: 0xd0000000, size: 0x1000}\n")
    res, devs, ram, _ = _run(sc)
    assert res.stop.code == 0
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(n))
    log = devs["regbank"].log
    writes, reads = log[:n], log[n:]
    assert [(k, off, d) for k, off, d in writes] == [("w", i, pattern[i:i + 1]) for i in range(n)]
    assert [(k, off, d) for k, off, d in reads] == [("r", i, pattern[i:i + 1]) for i in range(n)]
    assert ram[0][0x130000:0x130000 + n] == pattern
    # RAM→MMIO: one EPT exit per byte. MMIO→RAM: one to start, one more when RCX & 0x3ff
    # reaches 0 (RCX = 1024 after 76 bytes): KVM returns to the guest, which re-executes.
    assert res.exits.get("EPT_VIOLATION", 0) + res.exits.get("EPT_MISCONFIG", 0) == n + 2
    assert res.emulation.get("NO_DECODE") == n
    assert res.regs["rcx"] == 0 and res.regs["rsi"] == BANK + n and res.regs["rdi"] == 0x130000 + n


class SeqPort:
    """An input port that returns 0, 1, 2, ... (one byte per element read), logging each read."""

    def __init__(self) -> None:
        self.next = 0
        self.reads = 0

    def io_read(self, offset: int, size: int) -> bytes:
        self.reads += 1
        out = bytes((self.next + i) & 0xFF for i in range(size))
        self.next += size
        return out

    def io_write(self, offset: int, data: bytes) -> None:
        raise AssertionError("no writes expected")


REP_INS_ASM = """\
# inline guest (first line sets the YAML block indentation)
    .include "kvmsim.inc"
    .include "mmio.inc"
    .globl _start
_start:
    cld
    movw $0x70, %dx
    BYMODE "movq $0x120f00, %rdi", "movl $0x120f00, %edi"
    movl $N, %ecx
    rep insb
    EXIT 0
"""


@pytest.mark.parametrize("mode", MODES)
def test_rep_insb_each_element_read_once_in_order(tmp_path: Path, mode: str) -> None:
    n = 2500                      # 256 (to the page end), 1024, 1024, 196
    seq = SeqPort()
    sc = _inline(tmp_path, mode, REP_INS_ASM.replace("$N", f"${n}"), "")
    res, _, ram, _ = _run(sc, setup=lambda m: m.vmm.pio.register(0x70, 1, seq))
    assert res.stop.code == 0
    assert seq.reads == n
    assert ram[0][0x120F00:0x120F00 + n] == bytes(i & 0xFF for i in range(n))
    counts = [u.fields["count"] for u in res.userspace if u.reason == "IO" and u.fields["port"] == 0x70]
    assert counts == [256, 1024, 1024, 196]
    assert res.regs["rcx"] == 0 and res.regs["rdi"] == 0x120F00 + n


@pytest.mark.parametrize("mode", MODES)
def test_coalesced_writes_drained_before_the_read(mode: str) -> None:
    res, devs, _, _ = _run(_scenario_file(f"coalesced-mmio-{mode}"))
    assert res.stop.code == 0
    assert _log(devs["regbank"]) == [("w", 0x0, "11111111"), ("w", 0x4, "22222222"), ("w", 0x8, "3333"),
                                     ("w", 0x4, "44444444"), ("r", 0x4, "44444444")]
    assert [u.reason for u in res.userspace] == ["MMIO", "IO"]
