"""Model of emulate.c's fastop stubs (FASTOP1/2/2W/2CL/2R/3WCL, FASTOP1SRC2[EX], setcc).

In the kernel each `em_<op>` is a family of tiny asm stubs run on the host CPU with the
guest's arithmetic flags loaded; the host computes the result and flags. Here each is
one Python function computing what hardware computes. Calling convention kept from the
asm: dst in/out (rax), src in/out (rdx), src2 in (rcx), flags in/out (EFLAGS_MASK bits).
Each returns the new arithmetic flags, or -1 for a #DE (FASTOP1SRC2EX).
Simplified: where the SDM leaves a flag undefined we pick a fixed value (tests mask it).
"""

from __future__ import annotations

from .codes import (EFLAGS_MASK, X86_EFLAGS_AF, X86_EFLAGS_CF, X86_EFLAGS_OF, X86_EFLAGS_PF,
                    X86_EFLAGS_SF, X86_EFLAGS_ZF, X86EMUL_CONTINUE)
from .ctxt import X86EmulateCtxt
from .flags import ByteOp
from .memaccess import emulate_de

CF, PF, AF, ZF, SF, OF = (X86_EFLAGS_CF, X86_EFLAGS_PF, X86_EFLAGS_AF, X86_EFLAGS_ZF,
                          X86_EFLAGS_SF, X86_EFLAGS_OF)
MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
SIGN = {1: 0x80, 2: 0x8000, 4: 0x80000000, 8: 0x8000000000000000}
PARITY = [0 if bin(i).count("1") & 1 else PF for i in range(256)]
_NOT_EFLAGS_MASK = ~EFLAGS_MASK


def szp(res: int, size: int) -> int:
    """SF, ZF and PF of a result."""
    f = PARITY[res & 0xFF]
    if res == 0:
        f |= ZF
    if res & SIGN[size]:
        f |= SF
    return f


def sext(v: int, size: int) -> int:
    return v - (SIGN[size] << 1) if v & SIGN[size] else v


def fastop(ctxt: X86EmulateCtxt, fop) -> int:  # type: ignore[no-untyped-def]
    """Run one fastop at the operand size (ByteOp selects the byte stub)."""
    size = 1 if ctxt.d & ByteOp else ctxt.dst.bytes
    eflags = ctxt.eflags
    flags = fop(ctxt, size, eflags & EFLAGS_MASK)
    if flags < 0:
        return emulate_de(ctxt)
    ctxt.eflags = (eflags & _NOT_EFLAGS_MASK) | (flags & EFLAGS_MASK)
    return X86EMUL_CONTINUE


# --- two-operand arithmetic (FASTOP2) -------------------------------------------------
def _add(d: int, s: int, c: int, size: int) -> tuple[int, int]:
    m = MASK[size]
    full = d + s + c
    res = full & m
    f = szp(res, size) | ((d ^ s ^ res) & AF)
    sign = SIGN[size]
    if full > m:
        f |= CF
    if (d ^ res) & (s ^ res) & sign:
        f |= OF
    return res, f


def _sub(d: int, s: int, c: int, size: int) -> tuple[int, int]:
    m = MASK[size]
    res = (d - s - c) & m
    f = szp(res, size) | ((d ^ s ^ res) & AF)
    sign = SIGN[size]
    if d < s + c:
        f |= CF
    if (d ^ s) & (d ^ res) & sign:
        f |= OF
    return res, f


def em_add(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    ctxt.dst.val, f = _add(ctxt.dst.val & MASK[size], ctxt.src.val & MASK[size], 0, size)
    return f


def em_adc(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    ctxt.dst.val, f = _add(ctxt.dst.val & MASK[size], ctxt.src.val & MASK[size],
                           flags & CF, size)
    return f


def em_sub(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    ctxt.dst.val, f = _sub(ctxt.dst.val & MASK[size], ctxt.src.val & MASK[size], 0, size)
    return f


def em_sbb(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    ctxt.dst.val, f = _sub(ctxt.dst.val & MASK[size], ctxt.src.val & MASK[size],
                           flags & CF, size)
    return f


def em_cmp(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    return _sub(ctxt.dst.val & MASK[size], ctxt.src.val & MASK[size], 0, size)[1]


def em_cmp_r(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    """FASTOP2R(cmp): operands reversed (CMPS/SCAS compare src against dst)."""
    return _sub(ctxt.src.val & MASK[size], ctxt.dst.val & MASK[size], 0, size)[1]


def _logic(ctxt: X86EmulateCtxt, res: int, size: int) -> int:
    ctxt.dst.val = res & MASK[size]
    return szp(ctxt.dst.val, size)


def em_or(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    return _logic(ctxt, ctxt.dst.val | ctxt.src.val, size)


def em_and(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    return _logic(ctxt, ctxt.dst.val & ctxt.src.val, size)


def em_xor(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    return _logic(ctxt, ctxt.dst.val ^ ctxt.src.val, size)


def em_test(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    return szp(ctxt.dst.val & ctxt.src.val & MASK[size], size)


def em_xadd(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    old = ctxt.dst.val & MASK[size]
    ctxt.dst.val, f = _add(old, ctxt.src.val & MASK[size], 0, size)
    ctxt.src.val = old
    return f


# --- one-operand (FASTOP1) ------------------------------------------------------------
def em_not(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    ctxt.dst.val = ~ctxt.dst.val & MASK[size]
    return flags


def em_neg(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    ctxt.dst.val, f = _sub(0, ctxt.dst.val & MASK[size], 0, size)
    return f


def em_inc(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    ctxt.dst.val, f = _add(ctxt.dst.val & MASK[size], 1, 0, size)
    return (f & ~CF) | (flags & CF)


def em_dec(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    ctxt.dst.val, f = _sub(ctxt.dst.val & MASK[size], 1, 0, size)
    return (f & ~CF) | (flags & CF)


# --- MUL/IMUL/DIV/IDIV r/m (FASTOP1SRC2, FASTOP1SRC2EX): src2 is the r/m operand --------
def _wide_operands(ctxt: X86EmulateCtxt, size: int) -> tuple[int, int]:
    """(dividend or multiplicand, bits): AX for bytes, rDX:rAX otherwise."""
    bits = size * 8
    if size == 1:
        return ctxt.dst.val & 0xFFFF, bits
    return ((ctxt.src.val & MASK[size]) << bits) | (ctxt.dst.val & MASK[size]), bits


def _set_wide(ctxt: X86EmulateCtxt, size: int, lo: int, hi: int) -> None:
    if size == 1:
        ctxt.dst.val = (lo & 0xFF) | ((hi & 0xFF) << 8)
    else:
        ctxt.dst.val, ctxt.src.val = lo & MASK[size], hi & MASK[size]


def em_mul_ex(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    m = MASK[size]
    prod = (ctxt.dst.val & m) * (ctxt.src2.val & m)
    _set_wide(ctxt, size, prod, prod >> (size * 8))
    f = szp(prod & m, size)
    return f | (CF | OF if prod >> (size * 8) else 0)


def em_imul_ex(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    m = MASK[size]
    prod = sext(ctxt.dst.val & m, size) * sext(ctxt.src2.val & m, size)
    _set_wide(ctxt, size, prod, prod >> (size * 8))
    f = szp(prod & m, size)
    return f | (CF | OF if sext(prod & m, size) != prod else 0)


def em_div_ex(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    divisor = ctxt.src2.val & MASK[size]
    dividend, bits = _wide_operands(ctxt, size)
    if divisor == 0 or dividend // divisor > MASK[size]:
        return -1
    _set_wide(ctxt, size, dividend // divisor, dividend % divisor)
    return flags


def em_idiv_ex(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    divisor = sext(ctxt.src2.val & MASK[size], size)
    dividend, bits = _wide_operands(ctxt, size)
    dividend = dividend - (1 << (2 * bits)) if dividend >> (2 * bits - 1) else dividend
    if divisor == 0:
        return -1
    q = abs(dividend) // abs(divisor)
    if (dividend < 0) != (divisor < 0):
        q = -q
    r = dividend - q * divisor
    if not -SIGN[size] <= q < SIGN[size]:
        return -1
    _set_wide(ctxt, size, q, r)
    return flags


def em_imul(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    """FASTOP2W(imul): two-operand IMUL r, r/m (also the tail of em_imul_3op)."""
    m = MASK[size]
    prod = sext(ctxt.dst.val & m, size) * sext(ctxt.src.val & m, size)
    ctxt.dst.val = prod & m
    return szp(prod & m, size) | (CF | OF if sext(prod & m, size) != prod else 0)


# --- shifts and rotates (FASTOP2CL: count in CL = src2) -------------------------------
def _count(ctxt: X86EmulateCtxt, size: int) -> int:
    return ctxt.src2.val & (0x3F if size == 8 else 0x1F)


def em_shl(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    if not c:
        return flags
    d, bits = ctxt.dst.val & MASK[size], size * 8
    res = (d << c) & MASK[size]
    cf = (d >> (bits - c)) & 1 if c <= bits else 0
    ctxt.dst.val = res
    of = OF if bool(res & SIGN[size]) != bool(cf) else 0
    return szp(res, size) | (CF if cf else 0) | of


def em_shr(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    if not c:
        return flags
    d = ctxt.dst.val & MASK[size]
    res = d >> c
    ctxt.dst.val = res
    return szp(res, size) | (CF if (d >> (c - 1)) & 1 else 0) | (OF if d & SIGN[size] else 0)


def em_sar(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    if not c:
        return flags
    d = sext(ctxt.dst.val & MASK[size], size)
    res = (d >> c) & MASK[size]
    ctxt.dst.val = res
    return szp(res, size) | (CF if (d >> (c - 1)) & 1 else 0)


def _rot_flags(flags: int, cf: int, of: bool) -> int:
    return (flags & ~(CF | OF)) | (CF if cf else 0) | (OF if of else 0)


def em_rol(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    if not c:
        return flags
    bits, d = size * 8, ctxt.dst.val & MASK[size]
    r = c % bits
    res = ((d << r) | (d >> (bits - r))) & MASK[size] if r else d
    ctxt.dst.val = res
    cf = res & 1
    return _rot_flags(flags, cf, bool(res & SIGN[size]) != bool(cf))


def em_ror(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    if not c:
        return flags
    bits, d = size * 8, ctxt.dst.val & MASK[size]
    r = c % bits
    res = ((d >> r) | (d << (bits - r))) & MASK[size] if r else d
    ctxt.dst.val = res
    msb, msb1 = bool(res & SIGN[size]), bool(res & (SIGN[size] >> 1))
    return _rot_flags(flags, msb, msb != msb1)


def em_rcl(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    bits = size * 8
    r = c % (bits + 1) if size < 4 else c
    if not r:
        return flags
    full = (1 << (bits + 1)) - 1
    x = ((flags & CF) << bits) | (ctxt.dst.val & MASK[size])
    x = ((x << r) | (x >> (bits + 1 - r))) & full
    res, cf = x & MASK[size], x >> bits
    ctxt.dst.val = res
    return _rot_flags(flags, cf, bool(res & SIGN[size]) != bool(cf))


def em_rcr(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    bits = size * 8
    r = c % (bits + 1) if size < 4 else c
    if not r:
        return flags
    full = (1 << (bits + 1)) - 1
    x = ((flags & CF) << bits) | (ctxt.dst.val & MASK[size])
    x = ((x >> r) | (x << (bits + 1 - r))) & full
    res, cf = x & MASK[size], x >> bits
    ctxt.dst.val = res
    msb, msb1 = bool(res & SIGN[size]), bool(res & (SIGN[size] >> 1))
    return _rot_flags(flags, cf, msb != msb1)


# --- double shifts (FASTOP3WCL: dst, src, count in src2) ------------------------------
def em_shld(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    if not c:
        return flags
    bits, d, s = size * 8, ctxt.dst.val & MASK[size], ctxt.src.val & MASK[size]
    wide = ((d << bits) | s) << c  # d:s shifted left; the result is the top half
    res = (wide >> bits) & MASK[size]
    cf = (wide >> (2 * bits)) & 1
    ctxt.dst.val = res
    return szp(res, size) | (CF if cf else 0) | (OF if (res ^ d) & SIGN[size] else 0)


def em_shrd(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    c = _count(ctxt, size)
    if not c:
        return flags
    bits, d, s = size * 8, ctxt.dst.val & MASK[size], ctxt.src.val & MASK[size]
    wide = (s << bits) | d  # s:d shifted right; the result is the bottom half
    res = (wide >> c) & MASK[size]
    cf = (wide >> (c - 1)) & 1
    ctxt.dst.val = res
    return szp(res, size) | (CF if cf else 0) | (OF if (res ^ d) & SIGN[size] else 0)


# --- bit scan / bit test (FASTOP2W) ---------------------------------------------------
def em_bsf(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    s = ctxt.src.val & MASK[size]
    if not s:
        return (flags & ~ZF) | ZF
    ctxt.dst.val = (s & -s).bit_length() - 1
    return flags & ~ZF


def em_bsr(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    s = ctxt.src.val & MASK[size]
    if not s:
        return (flags & ~ZF) | ZF
    ctxt.dst.val = s.bit_length() - 1
    return flags & ~ZF


def _bit(ctxt: X86EmulateCtxt, size: int, flags: int) -> tuple[int, int]:
    bit = ctxt.src.val & (size * 8 - 1)
    cf = (ctxt.dst.val >> bit) & 1
    return 1 << bit, (flags & ~CF) | cf


def em_bt(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    return _bit(ctxt, size, flags)[1]


def em_bts(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    m, f = _bit(ctxt, size, flags)
    ctxt.dst.val = (ctxt.dst.val | m) & MASK[size]
    return f


def em_btr(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    m, f = _bit(ctxt, size, flags)
    ctxt.dst.val = ctxt.dst.val & ~m & MASK[size]
    return f


def em_btc(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    m, f = _bit(ctxt, size, flags)
    ctxt.dst.val = (ctxt.dst.val ^ m) & MASK[size]
    return f


# --- misc -----------------------------------------------------------------------------
def em_salc(ctxt: X86EmulateCtxt, size: int, flags: int) -> int:
    """SALC: AL = CF ? 0xff : 0, flags untouched (pushf; sbb al,al; popf)."""
    ctxt.dst.val = 0xFF if flags & CF else 0
    return flags


_CC = (
    lambda f: f & OF,                                  # o
    lambda f: f & CF,                                  # b/c
    lambda f: f & ZF,                                  # z
    lambda f: f & (CF | ZF),                           # be
    lambda f: f & SF,                                  # s
    lambda f: f & PF,                                  # p
    lambda f: bool(f & SF) != bool(f & OF),            # l
    lambda f: f & ZF or bool(f & SF) != bool(f & OF),  # le
)


def test_cc(condition: int, flags: int) -> int:
    """Evaluate condition code (low 4 bits of a Jcc/SETcc/CMOVcc opcode): 1 or 0."""
    r = 1 if _CC[(condition & 0xF) >> 1](flags) else 0
    return r ^ (condition & 1)
