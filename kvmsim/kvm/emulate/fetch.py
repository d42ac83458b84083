"""Model of emulate.c's instruction fetch: __do_insn_fetch_bytes and the insn_fetch macro.

Its own module because both the decoder (decode.py) and the VEX decoder (vex.py) fetch.
"""

from __future__ import annotations

from .codes import PAGE_SIZE, VCPU_SREG_CS, X86EMUL_CONTINUE, X86EMUL_F_FETCH
from .ctxt import X86EmulateCtxt
from .memaccess import U64, SegmentedAddress, __linearize, emulate_gp


class FetchFailed(Exception):
    """Internal `goto done` of insn_fetch: carries the X86EMUL_* code."""

    def __init__(self, rc: int) -> None:
        self.rc = rc


def __do_insn_fetch_bytes(ctxt: X86EmulateCtxt, op_size: int) -> int:
    """Fetch as much as allowed (15-byte cap, segment limit, page end) in one go."""
    f = ctxt.fetch
    cur_size = f.end
    addr = SegmentedAddress((ctxt.eip + cur_size) & U64, VCPU_SREG_CS)
    rc, linear, max_size = __linearize(ctxt, addr, 0, ctxt.mode, X86EMUL_F_FETCH)
    if rc != X86EMUL_CONTINUE:
        return rc
    size = 15 ^ cur_size
    if max_size < size:
        size = max_size
    in_page = PAGE_SIZE - (linear % PAGE_SIZE)
    if in_page < size:
        size = in_page
    if size < op_size:
        return emulate_gp(ctxt, 0)
    view = f.view[cur_size:cur_size + size]
    rc = ctxt.ops.fetch(ctxt, linear, view, size, ctxt.exception)
    if rc != X86EMUL_CONTINUE:
        return rc
    f.end += size
    return X86EMUL_CONTINUE


def insn_fetch(ctxt: X86EmulateCtxt, size: int, signed: bool = False) -> int:
    """Next `size` instruction bytes as an integer; advances _eip."""
    f = ctxt.fetch
    ptr = f.ptr
    if f.end - ptr < size:
        rc = __do_insn_fetch_bytes(ctxt, size - (f.end - ptr))
        if rc != X86EMUL_CONTINUE:
            raise FetchFailed(rc)
    f.ptr = ptr + size
    ctxt._eip += size
    if size == 1:
        v = f.data[ptr]
        return v - 0x100 if signed and v & 0x80 else v
    return int.from_bytes(f.data[ptr:ptr + size], "little", signed=signed)
