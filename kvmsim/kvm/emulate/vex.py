"""VEX-encoded moves for the emulator (EmulatorFeatures.vex_moves; off = upstream v6.18).

Models the late-2025 series that taught emulate.c VEX moves so AVX accesses to MMIO can
be emulated: VMOVUPS/VMOVUPD/VMOVAPS/VMOVAPD/VMOVDQA/VMOVDQU, 128- and 256-bit, loads
and stores. Our own table; anything else VEX-encoded still fails to decode.
"""

from __future__ import annotations

from .codes import X86EMUL_MODE_PROT64
from .ctxt import X86EmulateCtxt
from .em_basic import em_mov
from .fetch import insn_fetch
from .flags import Aligned, DstMem, DstReg, ModRM, Mov, SrcMem, SrcReg, Sse, Unaligned
from .opcode import I, Opcode

_LOAD = ModRM | Mov | Sse | DstReg | SrcMem
_STORE = ModRM | Mov | Sse | DstMem | SrcReg

# (opcode in map 0F, VEX.pp) -> entry; pp: 0 none, 1 66, 2 F3, 3 F2.
vex_0f_moves: dict[tuple[int, int], Opcode] = {
    (0x10, 0): I(_LOAD | Unaligned, em_mov),   # vmovups xmm/ymm, m
    (0x10, 1): I(_LOAD | Unaligned, em_mov),   # vmovupd
    (0x11, 0): I(_STORE | Unaligned, em_mov),
    (0x11, 1): I(_STORE | Unaligned, em_mov),
    (0x28, 0): I(_LOAD | Aligned, em_mov),     # vmovaps
    (0x28, 1): I(_LOAD | Aligned, em_mov),     # vmovapd
    (0x29, 0): I(_STORE | Aligned, em_mov),
    (0x29, 1): I(_STORE | Aligned, em_mov),
    (0x6F, 1): I(_LOAD | Aligned, em_mov),     # vmovdqa
    (0x6F, 2): I(_LOAD | Unaligned, em_mov),   # vmovdqu
    (0x7F, 1): I(_STORE | Aligned, em_mov),
    (0x7F, 2): I(_STORE | Unaligned, em_mov),
}


def decode_vex(ctxt: X86EmulateCtxt, op_prefix: bool) -> Opcode | None:
    """Decode the C4/C5 prefix (its first payload byte is in ctxt.modrm) and the opcode.

    Returns the table entry with ctxt.d, b, modrm, rex_prefix, vex/vex_l set, or None
    when this is not a VEX move we model (the decode then fails, as upstream).
    """
    if op_prefix or ctxt.rep_prefix or ctxt.lock_prefix or ctxt.rex_prefix:
        return None  # legacy prefixes before VEX are #UD
    p1 = ctxt.modrm
    if ctxt.b == 0xC5:
        rxb, mmmmm, p2 = (p1 >> 5) & 4 | 3, 1, p1
    else:
        rxb, mmmmm = p1 >> 5, p1 & 0x1F
        p2 = insn_fetch(ctxt, 1)
    vvvv, vex_l, pp = (~p2 >> 3) & 0xF, (p2 >> 2) & 1, p2 & 3
    if mmmmm != 1 or vvvv != 0:
        return None
    if ctxt.mode == X86EMUL_MODE_PROT64:  # R, X, B are stored inverted
        ctxt.rex_prefix = 0x40 | (~rxb & 7)
    opcode = vex_0f_moves.get((insn_fetch(ctxt, 1), pp))
    ctxt.b = ctxt.fetch.data[ctxt.fetch.ptr - 1]
    if opcode is None:
        return None
    ctxt.opcode_len = 2
    ctxt.vex, ctxt.vex_l = True, vex_l
    ctxt.d = opcode.flags
    ctxt.modrm = insn_fetch(ctxt, 1)
    return opcode
