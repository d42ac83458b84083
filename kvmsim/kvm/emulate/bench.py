"""Throughput of decode + execute on a mix of instructions (emulated instructions / second).

Not a kernel model: a helper for `make bench`-style checks (target >= 20,000/s).
"""

from __future__ import annotations

import time

from .ramops import RamOps, emulate_insn_bytes, make_ctxt

# A mix weighted like MMIO/PIO emulation: moves, ALU on memory, string and port I/O.
MIX = [bytes.fromhex(h) for h in (
    "8b03",          # mov eax,[rbx]
    "488903",        # mov [rbx],rax
    "0103",          # add [rbx],eax
    "f00fc103",      # lock xadd [rbx],eax
    "c60342",        # mov byte [rbx],0x42
    "0fb603",        # movzx eax,byte [rbx]
    "f30f6f03",      # movdqu xmm0,[rbx]
    "ec",            # in al,dx
    "ef",            # out dx,eax
    "ff33",          # push qword [rbx]
    "8f03",          # pop qword [rbx]
    "3b03",          # cmp eax,[rbx]
)]


def bench_emulated_insns(seconds: float = 1.0) -> float:
    """Run the mix for about `seconds`; return emulated instructions per second."""
    ops = RamOps("long64")
    ops.regs[3], ops.regs[4], ops.regs[2] = 0x4000, 0x8000, 0x3F8
    ctxt = make_ctxt(ops, rip=0x1000)  # one ctxt per vCPU, reused as x86.c does
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for insn in MIX:
            ctxt.eip, ctxt.eflags = 0x1000, 0x2
            emulate_insn_bytes(ctxt, insn)
        n += len(MIX)
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)
