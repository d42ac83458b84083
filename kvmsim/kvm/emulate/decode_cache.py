"""A decode cache for x86_decode_insn: steps 2-9 (sizes, prefixes, opcode maps, groups, flags) of
an instruction already decoded, looked up by its bytes.

Not in the kernel (kvm's emulator decodes every instruction from scratch): the simulator's
speed-up, so that a loop's MMIO instruction is parsed once.  What it skips is a pure function of
(CPU mode, emulation type's TRAP_UD bit, instruction bytes) and nothing else:
  - the instruction is still fetched every time (segment checks, page walk, the read), and the
    fetched bytes are the key, so a rewritten instruction (self-modifying code, a code page the
    guest or the VMM replaced) misses instead of replaying a stale decode;
  - steps 10-11 (ModRM/SIB effective address, operand values) read registers and always run;
  - decodes that consult other state are not stored: real/VM86 mode (CS.D), VEX (features),
    branches and shadow-stack ops (CET reads CR4 and MSRs), failed decodes, and any decode that
    needed a second fetch before step 10 (the bytes it read are then not all in the key).
The linear RIP is not part of the key: the same bytes in the same mode decode the same wherever
they sit (RIP-relative addressing is step 11's).  A hit restores exactly the fields steps 2-9
write, so the ctxt ends as a full decode leaves it (tests/emulate/test_decode_cache.py).
"""

from __future__ import annotations

import os

from .ctxt import X86EmulateCtxt

MAX_ENTRIES = 4096     # distinct instructions per vCPU before the cache starts over
ENABLED = os.environ.get("KVMSIM_DECODE_CACHE", "1") != "0"   # 0: decode everything (A/B, bisecting)

# (op_bytes, ad_bytes, b, rex, lock, rep, seg_override, has_seg_override, opcode_len, modrm, d,
#  is_branch, execute, check_perm, intercept, fetch.ptr after step 9)
Entry = tuple


class DecodeCache:
    """Per-ctxt (per-vCPU) dict from the key to the fields steps 2-9 wrote."""

    __slots__ = ("entries", "hits", "misses")

    def __init__(self) -> None:
        self.entries: dict[tuple, Entry] = {}
        self.hits = 0
        self.misses = 0

    def store(self, key: tuple, ctxt: X86EmulateCtxt, has_seg_override: bool) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()
        self.entries[key] = (ctxt.op_bytes, ctxt.ad_bytes, ctxt.b, ctxt.rex_prefix, ctxt.lock_prefix,
                             ctxt.rep_prefix, ctxt.seg_override, has_seg_override, ctxt.opcode_len, ctxt.modrm,
                             ctxt.d, ctxt.is_branch, ctxt.execute, ctxt.check_perm, ctxt.intercept,
                             ctxt.fetch.ptr)

    def clear(self) -> None:
        self.entries.clear()


def decode_cache(ctxt: X86EmulateCtxt) -> DecodeCache:
    """ctxt's cache, made on first use."""
    c = ctxt.decode_cache
    if c is None:
        c = ctxt.decode_cache = DecodeCache()
    return c
