"""Model of emulate.c's address and memory plumbing: linearize, segmented_read/write,
the read_emulated cache, writeback, push/pop, the PIO read-ahead, and emulate_<exception>.
"""

from __future__ import annotations

from .codes import (GP_VECTOR, DB_VECTOR, DE_VECTOR, NM_VECTOR, OP_MEM, OP_MEM_STR, OP_MM,
                    OP_REG, OP_XMM, PAGE_SIZE, SS_VECTOR, TS_VECTOR, UD_VECTOR,
                    VCPU_REGS_RCX, VCPU_REGS_RDI, VCPU_REGS_RSP, VCPU_SREG_FS, VCPU_SREG_SS,
                    X86_CR4_LA57, X86_EFLAGS_DF, X86EMUL_CONTINUE, X86EMUL_F_FETCH,
                    X86EMUL_F_WRITE, X86EMUL_MODE_PROT64, X86EMUL_MODE_REAL,
                    X86EMUL_PROPAGATE_FAULT, X86EMUL_UNHANDLEABLE)
from .ctxt import Operand, X86EmulateCtxt, reg_read, reg_rmw, reg_write, assign_register
from .ctxt import write_register_operand
from .flags import AlignMask, Aligned16, Avx, String, Unaligned

U64 = 0xFFFFFFFFFFFFFFFF


class SegmentedAddress:
    """struct segmented_address."""

    __slots__ = ("ea", "seg")

    def __init__(self, ea: int, seg: int) -> None:
        self.ea = ea
        self.seg = seg


# struct operand's addr.mem is a struct segmented_address: a memory Operand (its ea and seg) is
# passed as the address itself, as emulate.c passes ctxt->src.addr.mem, with no copy made.
Addr = SegmentedAddress | Operand


# --- exceptions ----------------------------------------------------------------------
def emulate_exception(ctxt: X86EmulateCtxt, vec: int, error: int, valid: bool) -> int:
    """Record the exception for the guest; the caller returns PROPAGATE_FAULT."""
    if vec > 0x1F:  # KVM_EMULATOR_BUG_ON
        ctxt.ops.vm_bugged(ctxt)
        return X86EMUL_UNHANDLEABLE
    exc = ctxt.exception
    exc.vector, exc.error_code, exc.error_code_valid = vec, error, valid
    return X86EMUL_PROPAGATE_FAULT


def emulate_db(ctxt: X86EmulateCtxt) -> int:
    return emulate_exception(ctxt, DB_VECTOR, 0, False)


def emulate_gp(ctxt: X86EmulateCtxt, err: int) -> int:
    return emulate_exception(ctxt, GP_VECTOR, err, True)


def emulate_ss(ctxt: X86EmulateCtxt, err: int) -> int:
    return emulate_exception(ctxt, SS_VECTOR, err, True)


def emulate_ud(ctxt: X86EmulateCtxt) -> int:
    return emulate_exception(ctxt, UD_VECTOR, 0, False)


def emulate_ts(ctxt: X86EmulateCtxt, err: int) -> int:
    return emulate_exception(ctxt, TS_VECTOR, err, True)


def emulate_de(ctxt: X86EmulateCtxt) -> int:
    return emulate_exception(ctxt, DE_VECTOR, 0, False)


def emulate_nm(ctxt: X86EmulateCtxt) -> int:
    return emulate_exception(ctxt, NM_VECTOR, 0, False)


# --- address-size helpers ------------------------------------------------------------
def ad_mask(ctxt: X86EmulateCtxt) -> int:
    return (1 << (ctxt.ad_bytes << 3)) - 1


def address_mask(ctxt: X86EmulateCtxt, reg: int) -> int:
    return reg & U64 if ctxt.ad_bytes == 8 else reg & ((1 << (ctxt.ad_bytes << 3)) - 1)


def register_address(ctxt: X86EmulateCtxt, reg: int) -> int:
    return address_mask(ctxt, reg_read(ctxt, reg))


def register_address_increment(ctxt: X86EmulateCtxt, reg: int, inc: int) -> None:
    """Add inc to a pointer/counter register at the current address size."""
    old = reg_rmw(ctxt, reg)
    reg_write(ctxt, reg, assign_register(old, old + inc, ctxt.ad_bytes))


def stack_mask(ctxt: X86EmulateCtxt) -> int:
    """0xffff or 0xffffffff from SS.D outside 64-bit mode."""
    if ctxt.mode == X86EMUL_MODE_PROT64:
        return U64
    seg = ctxt.ops.get_segment(ctxt, VCPU_SREG_SS)
    return 0xFFFFFFFF if seg is not None and seg[1].d else 0xFFFF


def stack_size(ctxt: X86EmulateCtxt) -> int:
    return {U64: 8, 0xFFFFFFFF: 4}.get(stack_mask(ctxt), 2)


def assign_masked(old: int, new: int, mask: int) -> int:
    return (old & ~mask) | (new & mask)


def rsp_increment(ctxt: X86EmulateCtxt, inc: int) -> None:
    old = reg_rmw(ctxt, VCPU_REGS_RSP)
    mask = U64 if ctxt.mode == X86EMUL_MODE_PROT64 else stack_mask(ctxt)
    reg_write(ctxt, VCPU_REGS_RSP, (old & ~mask) | ((old + inc) & mask))  # assign_masked


def seg_base(ctxt: X86EmulateCtxt, seg: int) -> int:
    if ctxt.mode == X86EMUL_MODE_PROT64 and seg < VCPU_SREG_FS:
        return 0
    return ctxt.ops.get_cached_segment_base(ctxt, seg)


# --- linearize -------------------------------------------------------------------------
def insn_alignment(ctxt: X86EmulateCtxt, size: int) -> int:
    """Required alignment: vector moves by class; 16+ byte accesses only."""
    if size < 16:
        return 1
    align = ctxt.d & AlignMask
    if align in (Unaligned, Avx):
        return 1
    if align == Aligned16:
        return 16
    return size


def __linearize(ctxt: X86EmulateCtxt, addr: Addr, size: int, mode: int,
                flags: int) -> tuple[int, int, int]:
    """Segment + canonical checks. Returns (rc, linear, max_size)."""
    seg = addr.seg
    ctxt_mode = ctxt.mode
    ops = ctxt.ops
    # seg_base, inlined
    if ctxt_mode == X86EMUL_MODE_PROT64 and seg < VCPU_SREG_FS:
        la = addr.ea & U64
    else:
        la = (ops.get_cached_segment_base(ctxt, seg) + addr.ea) & U64
    if mode == X86EMUL_MODE_PROT64:
        la = ops.get_untagged_addr(ctxt, la, flags) & U64
        # ctxt_virt_addr_bits + __is_canonical_address, inlined
        if ops.get_cr(ctxt, 4) & X86_CR4_LA57:
            sign = la >> 56
            if sign != 0 and sign != 0xFF:
                return _bad(ctxt, addr), la, 0
            max_size = ((1 << 57) - la) & U64
        else:
            sign = la >> 47
            if sign != 0 and sign != 0x1FFFF:
                return _bad(ctxt, addr), la, 0
            max_size = ((1 << 48) - la) & U64
        if max_size > 0xFFFFFFFF:
            max_size = 0xFFFFFFFF
        if size > max_size:
            return _bad(ctxt, addr), la, 0
        # insn_alignment() is 1 below 16 bytes
        if size >= 16 and la & (insn_alignment(ctxt, size) - 1):
            return emulate_gp(ctxt, 0), la, 0
        return X86EMUL_CONTINUE, la, max_size
    else:
        la &= 0xFFFFFFFF
        seg = ctxt.ops.get_segment(ctxt, addr.seg)
        if seg is None:
            return _bad(ctxt, addr), la, 0
        desc = seg[1]
        code = desc.type & 8
        if (((ctxt.mode != X86EMUL_MODE_REAL and code) or not desc.type & 2)
                and flags & X86EMUL_F_WRITE):
            return _bad(ctxt, addr), la, 0
        if not flags & X86EMUL_F_FETCH and code and not desc.type & 2:
            return _bad(ctxt, addr), la, 0  # unreadable code segment
        lim = desc.limit_scaled()
        if not code and desc.type & 4:  # expand-down
            if addr.ea <= lim:
                return _bad(ctxt, addr), la, 0
            lim = 0xFFFFFFFF if desc.d else 0xFFFF
        if addr.ea > lim:
            return _bad(ctxt, addr), la, 0
        if lim == 0xFFFFFFFF:
            max_size = 0xFFFFFFFF
        else:
            max_size = lim + 1 - addr.ea
            if size > max_size:
                return _bad(ctxt, addr), la, 0
    # insn_alignment() is 1 below 16 bytes
    if size >= 16 and la & (insn_alignment(ctxt, size) - 1):
        return emulate_gp(ctxt, 0), la, 0
    return X86EMUL_CONTINUE, la, max_size


def _bad(ctxt: X86EmulateCtxt, addr: Addr) -> int:
    """#SS(0) for stack-segment faults, #GP(0) otherwise."""
    return emulate_ss(ctxt, 0) if addr.seg == VCPU_SREG_SS else emulate_gp(ctxt, 0)


def linearize(ctxt: X86EmulateCtxt, addr: Addr, size: int,
              write: bool) -> tuple[int, int]:
    rc, la, _ = __linearize(ctxt, addr, size, ctxt.mode, X86EMUL_F_WRITE if write else 0)
    return rc, la


# --- data access ---------------------------------------------------------------------
def read_emulated(ctxt: X86EmulateCtxt, addr: int, size: int) -> tuple[int, bytes]:
    """Read through ctxt.mem_read: replay cached bytes, else ops.read_emulated into the slot.

    An IO_NEEDED read leaves `end` where it was, so the NO_DECODE re-run finds the
    userspace data in the same slot and earlier reads replay from the cache.
    The data comes back as a fresh copy (a bytearray slice) of the cache slot.
    """
    mc = ctxt.mem_read
    pos = mc.pos
    data = mc.data
    if pos >= mc.end:
        end = mc.end
        if end + size >= len(data):  # KVM_EMULATOR_BUG_ON
            ctxt.ops.vm_bugged(ctxt)
            return X86EMUL_UNHANDLEABLE, b""
        rc = ctxt.ops.read_emulated(ctxt, addr, mc.view[end:end + size], size, ctxt.exception)
        if rc != X86EMUL_CONTINUE:
            return rc, b""
        mc.end = end + size
    mc.pos = pos + size
    return X86EMUL_CONTINUE, data[pos:pos + size]


def segmented_read(ctxt: X86EmulateCtxt, addr: Addr, size: int) -> tuple[int, int]:
    """linearize + read_emulated; returns (rc, little-endian value)."""
    rc, la, _ = __linearize(ctxt, addr, size, ctxt.mode, 0)  # linearize(..., false), inlined
    if rc != X86EMUL_CONTINUE:
        return rc, 0
    rc, data = read_emulated(ctxt, la, size)
    if rc != X86EMUL_CONTINUE:
        return rc, 0
    return rc, int.from_bytes(data, "little")


def segmented_write(ctxt: X86EmulateCtxt, addr: Addr, data: bytes) -> int:
    rc, la = linearize(ctxt, addr, len(data), True)
    if rc != X86EMUL_CONTINUE:
        return rc
    return ctxt.ops.write_emulated(ctxt, la, data, len(data), ctxt.exception)


def segmented_cmpxchg(ctxt: X86EmulateCtxt, addr: Addr, old: bytes,
                      new: bytes) -> int:
    rc, la = linearize(ctxt, addr, len(new), True)
    if rc != X86EMUL_CONTINUE:
        return rc
    return ctxt.ops.cmpxchg_emulated(ctxt, la, old, new, len(new), ctxt.exception)


def segmented_read_std(ctxt: X86EmulateCtxt, addr: SegmentedAddress,
                       size: int) -> tuple[int, bytes]:
    """Plain guest-RAM read (descriptors, FXRSTOR image): no read cache."""
    rc, la = linearize(ctxt, addr, size, False)
    if rc != X86EMUL_CONTINUE:
        return rc, b""
    buf = bytearray(size)
    rc = ctxt.ops.read_std(ctxt, la, memoryview(buf), size, ctxt.exception, False)
    return rc, bytes(buf)


def segmented_write_std(ctxt: X86EmulateCtxt, addr: SegmentedAddress, data: bytes) -> int:
    rc, la = linearize(ctxt, addr, len(data), True)
    if rc != X86EMUL_CONTINUE:
        return rc
    return ctxt.ops.write_std(ctxt, la, data, len(data), ctxt.exception, False)


def linear_read_system(ctxt: X86EmulateCtxt, linear: int, size: int) -> tuple[int, bytes]:
    buf = bytearray(size)
    rc = ctxt.ops.read_std(ctxt, linear, memoryview(buf), size, ctxt.exception, True)
    return rc, bytes(buf)


def linear_write_system(ctxt: X86EmulateCtxt, linear: int, data: bytes) -> int:
    return ctxt.ops.write_std(ctxt, linear, data, len(data), ctxt.exception, True)


def to_bytes(val: int, size: int) -> bytes:
    return (val & ((1 << (size << 3)) - 1)).to_bytes(size, "little")


def writeback(ctxt: X86EmulateCtxt, op: Operand) -> int:
    """Commit one operand: register cache, memory (cmpxchg under LOCK), string, vector."""
    t = op.type
    if t == OP_REG:
        write_register_operand(ctxt, op)
    elif t == OP_MEM:
        nbytes = op.bytes
        mask = (1 << (nbytes << 3)) - 1
        if ctxt.lock_prefix:
            return segmented_cmpxchg(ctxt, op, (op.orig_val & mask).to_bytes(nbytes, "little"),
                                     (op.val & mask).to_bytes(nbytes, "little"))
        return segmented_write(ctxt, op, (op.val & mask).to_bytes(nbytes, "little"))
    elif t == OP_MEM_STR:
        return segmented_write(ctxt, op, bytes(op.data[:op.bytes * op.count]))
    elif t == OP_XMM:
        if ctxt.vex:  # VEX writes zero the rest of the YMM register
            ctxt.ops.write_avx_reg(ctxt, op.xmm, to_bytes(op.val, op.bytes).ljust(32, b"\0"))
        else:
            ctxt.ops.write_sse_reg(ctxt, op.xmm, to_bytes(op.val, 16))
    elif t == OP_MM:
        ctxt.ops.write_mmx_reg(ctxt, op.mm, op.val & U64)
    return X86EMUL_CONTINUE


# --- stack ---------------------------------------------------------------------------
def emulate_push(ctxt: X86EmulateCtxt, val: int, length: int) -> int:
    rsp_increment(ctxt, -length)
    addr = SegmentedAddress(reg_read(ctxt, VCPU_REGS_RSP) & stack_mask(ctxt), VCPU_SREG_SS)
    return segmented_write(ctxt, addr, to_bytes(val, length))


def emulate_pop(ctxt: X86EmulateCtxt, length: int) -> tuple[int, int]:
    addr = SegmentedAddress(reg_read(ctxt, VCPU_REGS_RSP) & stack_mask(ctxt), VCPU_SREG_SS)
    rc, val = segmented_read(ctxt, addr, length)
    if rc != X86EMUL_CONTINUE:
        return rc, 0
    rsp_increment(ctxt, length)
    return rc, val


# --- port I/O read-ahead ---------------------------------------------------------------
def pio_in_emulated(ctxt: X86EmulateCtxt, size: int, port: int) -> int | None:
    """IN/INS through ctxt.io_read. None = userspace must supply the data first.

    A refill asks for n = min(bytes left in RDI's page in the DF direction, 1024/size,
    count) elements, at least 1. REP INS with DF=0 turns the destination into a bulk
    OP_MEM_STR write of everything cached.
    """
    rc = ctxt.io_read
    if rc.pos == rc.end:
        count = (address_mask(ctxt, reg_read(ctxt, VCPU_REGS_RCX))
                 if ctxt.rep_prefix else 1)
        rdi = reg_read(ctxt, VCPU_REGS_RDI)
        in_page = (rdi % PAGE_SIZE if ctxt.eflags & X86_EFLAGS_DF
                   else PAGE_SIZE - rdi % PAGE_SIZE)
        n = min(in_page, len(rc.data) // size, count) or 1
        rc.pos = rc.end = 0
        if not ctxt.ops.pio_in_emulated(ctxt, size, port, memoryview(rc.data)[:n * size], n):
            return None
        rc.end = n * size
    if ctxt.rep_prefix and ctxt.d & String and not ctxt.eflags & X86_EFLAGS_DF:
        dst = ctxt.dst
        dst.data = bytes(rc.data[rc.pos:rc.end])
        dst.type = OP_MEM_STR
        dst.count = (rc.end - rc.pos) // size
        rc.pos = rc.end
        return 0
    val = int.from_bytes(rc.data[rc.pos:rc.pos + size], "little")
    rc.pos += size
    return val
