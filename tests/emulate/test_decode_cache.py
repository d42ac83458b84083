"""The decode cache (kvm/emulate/decode_cache.py) changes nothing a decode leaves in the ctxt.

Every instruction form of the differential suite, in every mode it exists in, is decoded twice by
one ctxt (the second time from the cache, with other register values) and by another ctxt
with the cache off; the ctxt's decode state, operands included, must be the same.  Rewriting the
instruction bytes in memory (self-modifying code) must give the new instruction's decode.
"""

from __future__ import annotations

import random

import pytest

from kvmsim.kvm.emulate import decode
from kvmsim.kvm.emulate.ctxt import Operand, X86EmulateCtxt, init_decode_cache
from kvmsim.kvm.emulate.decode import x86_decode_insn
from kvmsim.kvm.emulate.ramops import RamOps, make_ctxt

from .forms import FORMS

RIP = 0x1000
_SKIP = {"ops", "vcpu", "features", "exception", "io_read", "mem_read", "decode_cache", "fetch",
         "src", "src2", "dst", "memop", "memopp"}
_STATE = [s for s in X86EmulateCtxt.__slots__ if s not in _SKIP]
PAIRS = [(f, m) for f in FORMS for m in f.modes]


def _op(op: Operand) -> tuple:
    return tuple(getattr(op, s) for s in Operand.__slots__)


def state(ctxt: X86EmulateCtxt) -> dict:
    """Everything a decode writes or leaves: ctxt fields, operands, which operand memopp is, fetch."""
    out = {s: getattr(ctxt, s) for s in _STATE}
    for name in ("src", "src2", "dst", "memop"):
        out[name] = _op(getattr(ctxt, name))
    out["memopp"] = next((n for n in ("src", "src2", "dst", "memop") if ctxt.memopp is getattr(ctxt, n)), None)
    f = ctxt.fetch
    out["fetch"] = (f.ptr, f.end, bytes(f.data[:f.end]))
    return out


def _decode(ctxt: X86EmulateCtxt, regs: list[int]) -> int:
    ctxt.ops.regs[:] = regs
    ctxt.eip, ctxt.eflags = RIP, 0x2
    init_decode_cache(ctxt)
    return x86_decode_insn(ctxt, None, 0, 0)


def _ctxt(mode: str, code: bytes) -> X86EmulateCtxt:
    ops = RamOps(mode)
    ops.mem[RIP:RIP + len(code) + 16] = code + bytes(16)
    return make_ctxt(ops, rip=RIP)


@pytest.mark.parametrize("form,mode", PAIRS, ids=[f"{f.descr} [{m}]" for f, m in PAIRS])
def test_a_cached_decode_leaves_what_a_full_decode_leaves(form, mode, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(hash((form.descr, mode)) & 0xFFFF)
    code = form.code(rng, mode)
    regs1 = [rng.getrandbits(64) for _ in range(16)]
    regs2 = [rng.getrandbits(64) for _ in range(16)]
    for regs in (regs1, regs2):
        regs[3] = 0x4000 + rng.randrange(0, 0x100)     # rBX: the forms' memory operand
    monkeypatch.setattr(decode, "_CACHE_ON", True)
    warm = _ctxt(mode, code)
    _decode(warm, regs1)
    rc = _decode(warm, regs2)
    cache = warm.decode_cache
    monkeypatch.setattr(decode, "_CACHE_ON", False)     # the same two decodes with no cache
    cold = _ctxt(mode, code)
    _decode(cold, regs1)
    assert _decode(cold, regs2) == rc
    assert state(warm) == state(cold)
    if mode != "real16" and cache is not None and cache.entries:
        assert cache.hits == 1      # the second decode came from the cache


def test_rewritten_bytes_are_decoded_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(decode, "_CACHE_ON", True)
    regs = [0] * 16
    regs[3] = 0x4000
    ctxt = _ctxt("long64", bytes.fromhex("8b03"))          # mov eax, [rbx]
    _decode(ctxt, regs)
    ctxt.ops.mem[RIP:RIP + 3] = bytes.fromhex("488903")     # the guest rewrites it: mov [rbx], rax
    _decode(ctxt, regs)
    monkeypatch.setattr(decode, "_CACHE_ON", False)     # the same two decodes with no cache
    plain = _ctxt("long64", bytes.fromhex("8b03"))
    _decode(plain, regs)
    plain.ops.mem[RIP:RIP + 3] = bytes.fromhex("488903")
    _decode(plain, regs)
    assert state(ctxt) == state(plain)
    assert ctxt.b == 0x89 and ctxt.op_bytes == 8
    assert ctxt.decode_cache.hits == 0 and ctxt.decode_cache.misses == 2
