"""I/O exit qualification (SDM table 28-5, reference §3.1): bit layout, instruction decode, and
what the kvm_exit tracepoint reports as info1 for real guest IN/OUT/INS/OUTS."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from capstone import CS_MODE_16, CS_MODE_32, CS_MODE_64, CS_ARCH_X86, Cs
from hypothesis import given, strategies as st

from kvmsim.hw.exits import IoInsn, decode_io
from kvmsim.hw.vmcs import ExitReason, IoExitQual
from kvmsim.trace.recorder import Recorder
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine

# ---------------------------------------------------------------- IoExitQual encode / decode

quals = st.builds(IoExitQual, size=st.sampled_from([1, 2, 4]), is_in=st.booleans(), string=st.booleans(),
                  rep=st.booleans(), imm=st.booleans(), port=st.integers(0, 0xFFFF))


@given(quals)
def test_io_exit_qual_round_trips(q: IoExitQual) -> None:
    assert IoExitQual.decode(q.encode()) == q


@given(quals)
def test_io_exit_qual_bit_positions_follow_the_sdm(q: IoExitQual) -> None:
    v = q.encode()
    assert v & 0b111 == q.size - 1                 # 2:0 size - 1
    assert bool(v >> 3 & 1) == q.is_in             # 3   direction, 1 = IN
    assert bool(v >> 4 & 1) == q.string            # 4   string instruction
    assert bool(v >> 5 & 1) == q.rep               # 5   REP prefix
    assert bool(v >> 6 & 1) == q.imm               # 6   operand encoding, 1 = immediate
    assert v >> 16 == q.port                       # 31:16 port
    assert v & 0xFF80 == 0                         # 15:7 reserved (cleared)
    assert v < 1 << 32


@given(st.integers(0, 0xFFFF_FFFF).filter(lambda v: v & 7 in (0, 1, 3)))
def test_io_exit_qual_decode_reads_only_the_defined_bits(v: int) -> None:
    q = IoExitQual.decode(v)
    assert q.encode() == v & 0xFFFF_007F
    assert q.size == (v & 7) + 1 and q.port == v >> 16


def test_io_exit_qual_known_values() -> None:
    """handle_io's own reading: size = (q & 7) + 1, in = q & 8, string = q & 16, port = q >> 16."""
    assert IoExitQual(1, False, False, False, False, 0x80).encode() == 0x0080_0000
    assert IoExitQual(4, True, False, False, True, 0x60).encode() == 0x0060_004B
    assert IoExitQual(1, False, True, True, False, 0x3F8).encode() == 0x03F8_0030


# ---------------------------------------------------------------- decode_io on instruction bytes

@dataclass(frozen=True)
class DecodeCase:
    descr: str            # what capstone must disassemble the bytes as (checked below)
    code: bytes
    bits: int             # default operand size / mode: 16, 32 or 64
    want: IoInsn


D = DecodeCase
DECODE_CASES = [
    # --- 64-bit mode
    D("out %al,(%dx)",      bytes([0xEE]),                   64, IoInsn(1, False, False, False, None)),
    D("in $0x60,%eax",      bytes([0xE5, 0x60]),             64, IoInsn(4, True, False, False, 0x60)),
    D("in $0x60,%ax",       bytes([0x66,                     # 66: operand size 32 -> 16
                                   0xE5, 0x60]),             64, IoInsn(2, True, False, False, 0x60)),
    D("in %dx,%eax (REX.W)", bytes([0x48,                    # REX.W: no 64-bit port I/O, still 4
                                    0xED]),                  64, IoInsn(4, True, False, False, None)),
    D("out %eax,$0xf4 (REX.B)", bytes([0x41,                 # REX.B: ignored by OUT imm8
                                       0xE7, 0xF4]),         64, IoInsn(4, False, False, False, 0xF4)),
    D("rep outsb",          bytes([0xF3,                     # F3: REP
                                   0x6E]),                   64, IoInsn(1, False, True, True, None)),
    D("rep insl",           bytes([0xF3, 0x6D]),             64, IoInsn(4, True, True, True, None)),
    D("rep insw",           bytes([0x66, 0xF3, 0x6D]),       64, IoInsn(2, True, True, True, None)),
    D("rep insw (F3 66)",   bytes([0xF3, 0x66, 0x6D]),       64, IoInsn(2, True, True, True, None)),
    D("outsw (REX.W)",      bytes([0x66, 0x48, 0x6F]),       64, IoInsn(2, False, True, False, None)),
    # --- 32-bit default operand size
    D("out %eax,(%dx)",     bytes([0xEF]),                   32, IoInsn(4, False, False, False, None)),
    D("out %ax,(%dx)",      bytes([0x66, 0xEF]),             32, IoInsn(2, False, False, False, None)),
    D("in $0x71,%al",       bytes([0xE4, 0x71]),             32, IoInsn(1, True, False, False, 0x71)),
    D("rep outsw",          bytes([0x66, 0xF3, 0x6F]),       32, IoInsn(2, False, True, True, None)),
    D("cs outsb",           bytes([0x2E,                     # CS segment override, no REP
                                   0x6E]),                   32, IoInsn(1, False, True, False, None)),
    D("rep insb (addr16)",  bytes([0x67,                     # 67: address size, not operand size
                                   0xF3, 0x6C]),             32, IoInsn(1, True, True, True, None)),
    D("repne insl",         bytes([0xF2, 0x6D]),             32, IoInsn(4, True, True, True, None)),
    # --- 16-bit default operand size (real mode)
    D("out %ax,(%dx) 16",   bytes([0xEF]),                   16, IoInsn(2, False, False, False, None)),
    D("out %eax,(%dx) 16",  bytes([0x66, 0xEF]),             16, IoInsn(4, False, False, False, None)),
    D("in $0x60,%eax 16",   bytes([0x66, 0xE5, 0x60]),       16, IoInsn(4, True, False, False, 0x60)),
    D("in $0x60,%ax 16",    bytes([0xE5, 0x60]),             16, IoInsn(2, True, False, False, 0x60)),
    D("out %al,$0x80 16",   bytes([0xE6, 0x80]),             16, IoInsn(1, False, False, False, 0x80)),
    D("rep insw 16",        bytes([0xF3, 0x6D]),             16, IoInsn(2, True, True, True, None)),
    D("rep outsl 16",       bytes([0x66, 0xF3, 0x6F]),       16, IoInsn(4, False, True, True, None)),
]

_CS_MODE = {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}


@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: f"{c.bits}:{c.descr}")
def test_decode_io_on_instruction_bytes(case: DecodeCase) -> None:
    got = decode_io(case.code + b"\x90" * 4, default_op32=case.bits != 16, long_mode=case.bits == 64)
    assert got == case.want


@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: f"{c.bits}:{c.descr}")
def test_decode_vectors_are_the_instructions_they_name(case: DecodeCase) -> None:
    """The hand-written bytes disassemble as one IN/OUT/INS/OUTS of the size the case expects."""
    insn = next(Cs(CS_ARCH_X86, _CS_MODE[case.bits]).disasm(case.code, 0))
    assert insn.size == len(case.code)
    assert insn.mnemonic.split()[-1].rstrip("bwdl") in ("in", "out", "ins", "outs"), insn.mnemonic
    width = {1: ("al", "b"), 2: ("ax", "w"), 4: ("eax", "d")}[case.want.size]
    assert width[0] in insn.op_str.split(", ") or insn.mnemonic.endswith(width[1]), (insn.mnemonic, insn.op_str)


# ---------------------------------------------------------------- end to end: kvm_exit info1

@dataclass(frozen=True)
class GuestCase:
    descr: str
    mode: str
    asm: str
    info1: int


G = GuestCase
GUEST_CASES = [
    G("out %al,(%dx) port 0x80", "long64", "movw $0x80, %dx\n outb %al, (%dx)", 0x0080_0000),
    G("in $0x60,%eax", "long64", "inl $0x60, %eax", 0x0060_004B),
    G("rep outsb to 0x3f8", "long64",
      "movl $buf, %esi\n movl $2, %ecx\n movw $0x3f8, %dx\n rep outsb", 0x03F8_0030),
    G("outw %ax,(%dx) port 0x1234", "prot32", "movw $0x1234, %dx\n outw %ax, (%dx)", 0x1234_0001),
    G("rep insw from 0x60", "prot32",
      "movl $buf, %edi\n movl $3, %ecx\n movw $0x60, %dx\n rep insw", 0x0060_0039),
    G("outb %al,$0xf4", "real16", "outb %al, $0xf4", 0x00F4_0040),
    G("inl $0x60,%eax", "real16", "inl $0x60, %eax", 0x0060_004B),
    G("insb port 0x71", "real16", "movw $buf, %di\n movw $0x71, %dx\n insb", 0x0071_0018),
]


@pytest.mark.parametrize("case", GUEST_CASES, ids=lambda c: f"{c.mode}:{c.descr}")
def test_guest_io_exit_qualification_in_kvm_exit_trace(case: GuestCase) -> None:
    asm = f"""
        .text
        .globl _start
_start:
        {case.asm}
        hlt
        .data
buf:    .byte 0x41, 0x42, 0, 0, 0, 0, 0, 0
"""
    m = machine(asm, case.mode)
    rec = Recorder(functions=False).start()
    try:
        run = kvm_run(m, KvmExit.IO)
    finally:
        rec.stop()
        m.close()
    exits = [e.fields for e in rec.events if e.kind == "tp" and e.name == "kvm_exit"]
    assert [e["exit_reason"] for e in exits] == [ExitReason.IO_INSTRUCTION]
    assert exits[0]["info1"] == case.info1, hex(exits[0]["info1"])
    q = IoExitQual.decode(case.info1)
    assert (run.io.port, run.io.size, run.io.direction) == (q.port, q.size, 0 if q.is_in else 1)
