"""The instruction forms the differential tests run, as data (descr = test id).

Memory operands are [rBX] (rBX points into the data area); register operands use
rDX/rCX/rAX with random values. The flags the SDM leaves undefined are masked per case by the
harness (harness.sdm_undefined, from kvmsim/scenario/undefined_flags.py); `kvm_divergence`
masks more only where KVM's emulator differs from hardware on purpose.
"""

from __future__ import annotations

import random
from typing import Callable

from .harness import CODE, DATA, SF, ZF, Form

ALL = ("real16", "prot32", "long64")
NON64 = ("real16", "prot32")
PM = ("prot32", "long64")
Gen = Callable[[random.Random, str], bytes]

# Operand-size variants: (suffix, prefix bytes, modes, op size by mode)
VARIANTS = (
    ("", b"", ALL, {"real16": 2, "prot32": 4, "long64": 4}),
    (" o16/32", b"\x66", ALL, {"real16": 4, "prot32": 2, "long64": 2}),
    (" rex.w", b"\x48", ("long64",), {"long64": 8}),
)


def mem(reg: int, mode: str) -> int:
    """ModRM for [rBX] with the given reg field."""
    return (reg << 3) | (7 if mode == "real16" else 3)


def rr(reg: int, rm: int) -> int:
    return 0xC0 | (reg << 3) | rm


def imm(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little")


def small(lo: int, hi: int) -> Callable[[random.Random, str], int]:
    return lambda rng, mode: rng.randrange(lo, hi)


FORMS: list[Form] = []


def add(descr: str, modes: tuple[str, ...], code: Gen, **kw) -> None:  # type: ignore[no-untyped-def]
    FORMS.append(Form(descr, modes, code, **kw))


def sized(descr: str, build: Callable[[random.Random, str, int], bytes], modes=ALL,
          **kw) -> None:  # type: ignore[no-untyped-def]
    """Add one form per operand-size variant; build gets the operand size."""
    for suffix, pre, vmodes, size in VARIANTS:
        ms = tuple(m for m in modes if m in vmodes)
        if ms:
            add(descr + suffix, ms,
                (lambda p, sz: lambda rng, mode: p + build(rng, mode, sz[mode]))(pre, size), **kw)


# --- ALU ------------------------------------------------------------------------------
for i, name in enumerate(("add", "or", "adc", "sbb", "and", "sub", "xor", "cmp")):
    base = i * 8
    add(f"{name} m8,r8", ALL, (lambda b: lambda r, m: bytes([b, mem(2, m)]))(base))
    sized(f"{name} m,r", (lambda b: lambda r, m, s: bytes([b + 1, mem(2, m)]))(base))
    add(f"{name} r8,m8", ALL, (lambda b: lambda r, m: bytes([b + 2, mem(1, m)]))(base))
    sized(f"{name} r,m", (lambda b: lambda r, m, s: bytes([b + 3, mem(1, m)]))(base))
    add(f"{name} al,imm8", ALL, (lambda b: lambda r, m: bytes([b + 4]) + imm(r, 1))(base))
    sized(f"{name} acc,imm", (lambda b: lambda r, m, s: bytes([b + 5]) + imm(r, min(s, 4)))(base))
    add(f"{name} m8,imm8 (80)", ALL, (lambda i_: lambda r, m: bytes([0x80, mem(i_, m)])
                                      + imm(r, 1))(i))
    sized(f"{name} m,imm (81)", (lambda i_: lambda r, m, s: bytes([0x81, mem(i_, m)])
                                 + imm(r, min(s, 4)))(i))
    sized(f"{name} m,imm8 (83)", (lambda i_: lambda r, m, s: bytes([0x83, mem(i_, m)])
                                  + imm(r, 1))(i))
    sized(f"{name} r,r", (lambda b: lambda r, m, s: bytes([b + 1, rr(2, 1)]))(base))
    if name != "cmp":
        add(f"lock {name} m,r", ALL, (lambda b: lambda r, m: bytes([0xF0, b + 1, mem(2, m)]))(base))
    add(f"{name} m8,imm8 (82)", NON64, (lambda i_: lambda r, m: bytes([0x82, mem(i_, m)])
                                        + imm(r, 1))(i))

# --- TEST, group 3, INC/DEC -----------------------------------------------------------
add("test m8,r8", ALL, lambda r, m: bytes([0x84, mem(2, m)]))
sized("test m,r", lambda r, m, s: bytes([0x85, mem(2, m)]))
add("test al,imm8", ALL, lambda r, m: b"\xa8" + imm(r, 1))
sized("test acc,imm", lambda r, m, s: b"\xa9" + imm(r, min(s, 4)))
add("test m8,imm8 (f6)", ALL, lambda r, m: bytes([0xF6, mem(0, m)]) + imm(r, 1))
sized("test m,imm (f7)", lambda r, m, s: bytes([0xF7, mem(0, m)]) + imm(r, min(s, 4)))
for reg, name in ((2, "not"), (3, "neg"), (4, "mul"), (5, "imul"), (6, "div"), (7, "idiv")):
    kw = {"regs": {2: small(0, 8)}} if name in ("div", "idiv") else {}
    add(f"{name} m8", ALL, (lambda g: lambda r, m: bytes([0xF6, mem(g, m)]))(reg), **kw)
    sized(f"{name} m", (lambda g: lambda r, m, s: bytes([0xF7, mem(g, m)]))(reg), **kw)
add("lock not m8", ALL, lambda r, m: bytes([0xF0, 0xF6, mem(2, m)]))
for reg, name in ((0, "inc"), (1, "dec")):
    add(f"{name} m8", ALL, (lambda g: lambda r, m: bytes([0xFE, mem(g, m)]))(reg))
    sized(f"{name} m", (lambda g: lambda r, m, s: bytes([0xFF, mem(g, m)]))(reg))
    add(f"{name} r (4x)", NON64, (lambda g: lambda r, m: bytes([0x40 + 8 * g + 2]))(reg))

# --- shifts and rotates ---------------------------------------------------------------
for g, name in enumerate(("rol", "ror", "rcl", "rcr", "shl", "shr", "sal", "sar")):
    shift = name in ("shl", "shr", "sal", "sar")

    def cnt(r: random.Random, size: int, _shift: bool = shift) -> int:
        return r.randrange(0, size * 8 if _shift and size < 4 else 32)
    add(f"{name} m8,imm8", ALL, (lambda g_, c: lambda r, m: bytes([0xC0, mem(g_, m), c(r, 1)]))(
        g, cnt))
    sized(f"{name} m,imm8", (lambda g_, c: lambda r, m, s: bytes([0xC1, mem(g_, m), c(r, s)]))(
        g, cnt))
    add(f"{name} m8,1", ALL, (lambda g_: lambda r, m: bytes([0xD0, mem(g_, m)]))(g))
    sized(f"{name} m,1", (lambda g_: lambda r, m, s: bytes([0xD1, mem(g_, m)]))(g))
    add(f"{name} m8,cl", ALL, (lambda g_: lambda r, m: bytes([0xD2, mem(g_, m)]))(g),
        regs={1: small(0, 8 if shift else 32)})
    sized(f"{name} m,cl", (lambda g_: lambda r, m, s: bytes([0xD3, mem(g_, m)]))(g),
          regs={1: small(0, 16 if shift else 32)})
for op, name in ((0xA4, "shld"), (0xAC, "shrd")):
    sized(f"{name} m,r,imm8", (lambda o: lambda r, m, s: bytes([0x0F, o, mem(2, m),
                                                               r.randrange(0, 16 if s == 2 else 32)]))(op))
    sized(f"{name} m,r,cl", (lambda o: lambda r, m, s: bytes([0x0F, o + 1, mem(2, m)]))(op),
          regs={1: small(0, 16)})

# --- bit ops --------------------------------------------------------------------------
for op, g, name in ((0xA3, 4, "bt"), (0xAB, 5, "bts"), (0xB3, 6, "btr"), (0xBB, 7, "btc")):
    sized(f"{name} m,r", (lambda o: lambda r, m, s: bytes([0x0F, o, mem(2, m)]))(op),
          regs={2: small(-64, 512)})
    sized(f"{name} m,imm8", (lambda g_: lambda r, m, s: bytes([0x0F, 0xBA, mem(g_, m)])
                             + imm(r, 1))(g))
    sized(f"{name} r,r", (lambda o: lambda r, m, s: bytes([0x0F, o, rr(2, 1)]))(op))
add("lock bts m,r", ALL, lambda r, m: bytes([0xF0, 0x0F, 0xAB, mem(2, m)]),
    regs={2: small(0, 256)})
for op, name in ((0xBC, "bsf"), (0xBD, "bsr")):
    sized(f"{name} r,m", (lambda o: lambda r, m, s: bytes([0x0F, o, mem(2, m)]))(op))
sized("imul r,m", lambda r, m, s: bytes([0x0F, 0xAF, mem(2, m)]))
sized("imul r,m,imm", lambda r, m, s: bytes([0x69, mem(2, m)]) + imm(r, min(s, 4)))
sized("imul r,m,imm8", lambda r, m, s: bytes([0x6B, mem(2, m)]) + imm(r, 1))

# --- data movement --------------------------------------------------------------------
add("mov m8,r8", ALL, lambda r, m: bytes([0x88, mem(2, m)]))
sized("mov m,r", lambda r, m, s: bytes([0x89, mem(2, m)]))
add("mov r8,m8", ALL, lambda r, m: bytes([0x8A, mem(2, m)]))
add("mov ah,m8", ALL, lambda r, m: bytes([0x8A, mem(4, m)]))
sized("mov r,m", lambda r, m, s: bytes([0x8B, mem(2, m)]))
add("mov m8,imm8", ALL, lambda r, m: bytes([0xC6, mem(0, m)]) + imm(r, 1))
sized("mov m,imm", lambda r, m, s: bytes([0xC7, mem(0, m)]) + imm(r, min(s, 4)))
add("mov r8,m8 [rbx+rsi*2+d8]", PM, lambda r, m: bytes([0x8A, 0x54, 0x73, r.randrange(0, 64)]),
    regs={6: small(0, 64)})
add("mov r,m [bp+si+d8]", ("real16",), lambda r, m: bytes([0x8B, 0x52, r.randrange(0, 64)]),
    regs={6: small(0, 64)})
add("mov r,m [rip+d32]", ("long64",), lambda r, m: bytes([0x8B, 0x15])
    + (DATA - CODE - 6 + r.randrange(0, 64)).to_bytes(4, "little"))


def _moffs(op: int) -> Gen:
    def build(r: random.Random, m: str) -> bytes:
        n = {"real16": 2, "prot32": 4, "long64": 8}[m]
        return bytes([op]) + (DATA + r.randrange(0, 0x100)).to_bytes(n, "little")
    return build


for op, name in ((0xA0, "mov al,moffs"), (0xA1, "mov acc,moffs"), (0xA2, "mov moffs,al"),
                 (0xA3, "mov moffs,acc")):
    add(name, ALL, _moffs(op))
for op, name in ((0xB6, "movzx r,m8"), (0xB7, "movzx r,m16"), (0xBE, "movsx r,m8"),
                 (0xBF, "movsx r,m16")):
    sized(name, (lambda o: lambda r, m, s: bytes([0x0F, o, mem(2, m)]))(op))
add("movsxd r64,m32", ("long64",), lambda r, m: bytes([0x48, 0x63, mem(2, m)]))
add("movzx r,r8 (ah)", ALL, lambda r, m: bytes([0x0F, 0xB6, rr(2, 4)]))
for cc in range(16):
    add(f"cmov{cc:x} r,m", PM, (lambda c: lambda r, m: bytes([0x0F, 0x40 + c, mem(2, m)]))(cc))
    add(f"set{cc:x} m8", ALL, (lambda c: lambda r, m: bytes([0x0F, 0x90 + c, mem(0, m)]))(cc))
add("cmovz r,m o16", PM, lambda r, m: bytes([0x66, 0x0F, 0x44, mem(2, m)]))
add("cmovz r64,m", ("long64",), lambda r, m: bytes([0x48, 0x0F, 0x44, mem(2, m)]))
add("xchg m8,r8", ALL, lambda r, m: bytes([0x86, mem(2, m)]))
sized("xchg m,r", lambda r, m, s: bytes([0x87, mem(2, m)]))
sized("xchg acc,r", lambda r, m, s: bytes([0x92]))
add("xadd m8,r8", ALL, lambda r, m: bytes([0x0F, 0xC0, mem(2, m)]))
sized("xadd m,r", lambda r, m, s: bytes([0x0F, 0xC1, mem(2, m)]))
add("lock xadd m,r", ALL, lambda r, m: bytes([0xF0, 0x0F, 0xC1, mem(2, m)]))
sized("lea r,[rbx+rsi*4+d32]", lambda r, m, s: (bytes([0x8D, 0x94, 0xB3]) if m != "real16" else
                                                bytes([0x8D, 0x90])) + imm(r, 4 if m != "real16" else 2))
add("xlat", ALL, lambda r, m: b"\xd7")
sized("cbw/cwde/cdqe", lambda r, m, s: b"\x98")
sized("cwd/cdq/cqo", lambda r, m, s: b"\x99")
add("lahf", ALL, lambda r, m: b"\x9f")
add("sahf", ALL, lambda r, m: b"\x9e")
add("bswap r32", ALL, lambda r, m: b"\x0f\xca" if m != "real16" else b"\x66\x0f\xca")
add("bswap r64", ("long64",), lambda r, m: b"\x48\x0f\xca")
add("movnti m,r", PM, lambda r, m: bytes([0x0F, 0xC3, mem(2, m)]))
add("mov m16,ds", ALL, lambda r, m: bytes([0x8C, mem(3, m)]))


add("cmpxchg m8,r8", ALL, lambda r, m: bytes([0x0F, 0xB0, mem(2, m)]), regs={0: small(0, 4)})
sized("cmpxchg m,r", lambda r, m, s: bytes([0x0F, 0xB1, mem(2, m)]))
add("lock cmpxchg m,r", ALL, lambda r, m: bytes([0xF0, 0x0F, 0xB1, mem(2, m)]))
add("cmpxchg8b m64", ALL, lambda r, m: bytes([0x0F, 0xC7, mem(1, m)]))

# --- stack ----------------------------------------------------------------------------
sized("push r", lambda r, m, s: b"\x52")
sized("pop r", lambda r, m, s: b"\x5a")
sized("push imm", lambda r, m, s: b"\x68" + imm(r, min(s, 4)), modes=ALL)
sized("push imm8", lambda r, m, s: b"\x6a" + imm(r, 1))
add("push m", ALL, lambda r, m: bytes([0xFF, mem(6, m)]))
add("pop m", ALL, lambda r, m: bytes([0x8F, mem(0, m)]))
sized("pushf", lambda r, m, s: b"\x9c")
add("pusha", NON64, lambda r, m: b"\x60")
add("popa", NON64, lambda r, m: b"\x61")
add("pushad/pushaw", NON64, lambda r, m: b"\x66\x60")
add("enter imm16,0", ALL, lambda r, m: b"\xc8" + imm(r, 2) + b"\x00")
add("leave", ALL, lambda r, m: b"\xc9", regs={5: lambda r, m: 0x8700 + r.randrange(0, 0x80)})

# --- control flow ---------------------------------------------------------------------
for cc in range(16):
    add(f"j{cc:x} rel8", ALL, (lambda c: lambda r, m: bytes([0x70 + c]) + imm(r, 1))(cc))
    add(f"j{cc:x} rel32", PM, (lambda c: lambda r, m: bytes([0x0F, 0x80 + c])
                               + r.randrange(-0x800, 0x800).to_bytes(4, "little", signed=True))(cc))
add("jmp rel8", ALL, lambda r, m: b"\xeb" + imm(r, 1))
add("jmp rel32", PM, lambda r, m: b"\xe9" + r.randrange(-0x800, 0x800).to_bytes(4, "little",
                                                                                 signed=True))
add("jmp rel16", ("real16",), lambda r, m: b"\xe9" + r.randrange(-0x800, 0x800).to_bytes(
    2, "little", signed=True))
add("call rel32", PM, lambda r, m: b"\xe8" + r.randrange(-0x800, 0x800).to_bytes(4, "little",
                                                                                 signed=True))
add("call rel16", ("real16",), lambda r, m: b"\xe8" + r.randrange(-0x800, 0x800).to_bytes(
    2, "little", signed=True))
for op, name in ((0xE0, "loopne"), (0xE1, "loope"), (0xE2, "loop"), (0xE3, "jcxz")):
    add(f"{name} rel8", ALL, (lambda o: lambda r, m: bytes([o]) + imm(r, 1))(op),
        regs={1: small(0, 3)})

# --- strings and port I/O ---------------------------------------------------------------
for op, name in ((0xA4, "movs"), (0xAA, "stos"), (0xAC, "lods"), (0xA6, "cmps"), (0xAE, "scas")):
    for sz, suffix in ((0, "b"), (1, "")):
        add(f"{name}{suffix}", ALL, (lambda o: lambda r, m: bytes([o]))(op + sz))
        reps = (b"\xf3", b"\xf2") if name in ("cmps", "scas") else (b"\xf3",)
        for rep in reps:
            add(f"rep{rep.hex()} {name}{suffix}", ALL,
                (lambda o, p: lambda r, m: p + bytes([o]))(op + sz, rep),
                rep=True, regs={1: small(0, 6)})
add("rep movs o16", ALL, lambda r, m: b"\x66\xf3\xa5", rep=True,
    regs={1: small(0, 6)})
for op, name in ((0x6C, "insb"), (0x6D, "ins"), (0x6E, "outsb"), (0x6F, "outs")):
    add(name, ALL, (lambda o: lambda r, m: bytes([o]))(op), regs={2: small(0, 0x10000)})
    add(f"rep {name}", ALL, (lambda o: lambda r, m: bytes([0xF3, o]))(op), rep=True,
        regs={2: small(0, 0x10000), 1: small(0, 5)})
add("in al,imm8", ALL, lambda r, m: b"\xe4" + imm(r, 1))
sized("in acc,imm8", lambda r, m, s: b"\xe5" + imm(r, 1))
add("out imm8,al", ALL, lambda r, m: b"\xe6" + imm(r, 1))
sized("out imm8,acc", lambda r, m, s: b"\xe7" + imm(r, 1))
add("in al,dx", ALL, lambda r, m: b"\xec", regs={2: small(0, 0x10000)})
sized("in acc,dx", lambda r, m, s: b"\xed", regs={2: small(0, 0x10000)})
add("out dx,al", ALL, lambda r, m: b"\xee", regs={2: small(0, 0x10000)})
sized("out dx,acc", lambda r, m, s: b"\xef", regs={2: small(0, 0x10000)})

# --- flags and BCD --------------------------------------------------------------------
for op, name in ((0xF5, "cmc"), (0xF8, "clc"), (0xF9, "stc"), (0xFC, "cld"), (0xFD, "std"),
                 (0xFA, "cli"), (0xFB, "sti")):
    add(name, ALL, (lambda o: lambda r, m: bytes([o]))(op))
add("salc", NON64, lambda r, m: b"\xd6")
add("das", NON64, lambda r, m: b"\x2f")
# KVM divergence kept on purpose: em_aam/em_aad set SF/ZF with `or $0` at the operand
# size (whole AX/EAX), hardware looks at AL only. The model follows emulate.c.
add("aam imm8", NON64, lambda r, m: b"\xd4" + bytes([r.randrange(1, 256)]), kvm_divergence=SF | ZF)
add("aad imm8", NON64, lambda r, m: b"\xd5" + imm(r, 1), kvm_divergence=SF | ZF)
add("nop", ALL, lambda r, m: b"\x90")
add("nopw m (0f 1f)", ALL, lambda r, m: bytes([0x0F, 0x1F, mem(0, m)]))

# --- SSE / MMX moves ------------------------------------------------------------------
for pre, op, name, align in ((b"", 0x10, "movups xmm,m", False), (b"", 0x11, "movups m,xmm", False),
                             (b"\x66", 0x10, "movupd xmm,m", False),
                             (b"\x66", 0x11, "movupd m,xmm", False),
                             (b"", 0x28, "movaps xmm,m", True), (b"", 0x29, "movaps m,xmm", True),
                             (b"\x66", 0x28, "movapd xmm,m", True),
                             (b"\x66", 0x29, "movapd m,xmm", True),
                             (b"\x66", 0x6F, "movdqa xmm,m", True),
                             (b"\x66", 0x7F, "movdqa m,xmm", True),
                             (b"\xf3", 0x6F, "movdqu xmm,m", False),
                             (b"\xf3", 0x7F, "movdqu m,xmm", False),
                             (b"\x66", 0xE7, "movntdq m,xmm", True), (b"", 0x2B, "movntps m,xmm", True),
                             (b"", 0x6F, "movq mm,m", False), (b"", 0x7F, "movq m,mm", False)):
    add(name, PM, (lambda p, o: lambda r, m: p + bytes([0x0F, o, mem(r.randrange(8), m)]))(pre, op),
        vec=True, align16=align)
add("movaps xmm,xmm", PM, lambda r, m: bytes([0x0F, 0x28, rr(r.randrange(8), r.randrange(8))]),
    vec=True)
add("movdqu xmm9,m", ("long64",), lambda r, m: bytes([0xF3, 0x44, 0x0F, 0x6F, mem(1, m)]), vec=True)

