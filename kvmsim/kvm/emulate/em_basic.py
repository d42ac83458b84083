"""Model of emulate.c's data-movement, stack, flag and port-I/O executors (em_*).

Each executor works on the decoded operands in ctxt and returns an X86EMUL_* code;
x86_emulate_insn does the operand reads before and the writeback after.
"""

from __future__ import annotations

from .codes import (KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI, OP_MEM_STR,
                    OP_IMM, OP_NONE, OP_REG, VCPU_REGS_RAX, VCPU_REGS_RBP, VCPU_REGS_RBX,
                    VCPU_REGS_RCX, VCPU_REGS_RDI,
                    VCPU_REGS_RDX, VCPU_REGS_RSP, VCPU_SREG_SS, VCPU_SREG_TR, X86_EFLAGS_AC,
                    X86_EFLAGS_AF, X86_EFLAGS_CF, X86_EFLAGS_DF, X86_EFLAGS_FIXED,
                    X86_EFLAGS_ID, X86_EFLAGS_IF, X86_EFLAGS_IOPL, X86_EFLAGS_IOPL_BIT,
                    X86_EFLAGS_NT, X86_EFLAGS_OF, X86_EFLAGS_PF, X86_EFLAGS_SF,
                    X86_EFLAGS_TF, X86_EFLAGS_VM, X86_EFLAGS_ZF, X86EMUL_CONTINUE,
                    X86EMUL_IO_NEEDED, X86EMUL_MODE_REAL, X86EMUL_MODE_VM86,
                    X86EMUL_UNHANDLEABLE)
from .ctxt import (REG_EFLAGS, X86EmulateCtxt, assign_register, reg_read, reg_rmw,
                   reg_write, write_register_operand)
from .fastop import em_bsf, em_bsr, em_cmp, em_imul, em_or, fastop
from .memaccess import (U64, assign_masked, emulate_de, emulate_gp, emulate_ud, emulate_pop,
                        emulate_push, pio_in_emulated, rsp_increment, stack_mask, stack_size,
                        to_bytes)
from .segments import get_segment_selector, load_segment_descriptor


def em_mov(ctxt: X86EmulateCtxt) -> int:
    """MOV and every plain copy (moffs, string MOVS/STOS/LODS, SSE/MMX moves, XLAT)."""
    ctxt.dst.val = ctxt.src.val
    return X86EMUL_CONTINUE


def em_movsxd(ctxt: X86EmulateCtxt) -> int:
    v = ctxt.src.val & 0xFFFFFFFF
    ctxt.dst.val = (v - (1 << 32) if v & 0x80000000 else v) & U64
    return X86EMUL_CONTINUE


def em_movbe(ctxt: X86EmulateCtxt) -> int:
    if not ctxt.ops.guest_has_movbe(ctxt):
        return emulate_ud(ctxt)
    n = ctxt.op_bytes
    swapped = int.from_bytes(to_bytes(ctxt.src.val, n), "big")
    if n == 2:  # the upper part of the destination register is preserved
        ctxt.dst.val = (ctxt.dst.val & ~0xFFFF) | swapped
    else:
        ctxt.dst.val = swapped
    return X86EMUL_CONTINUE


def em_bswap(ctxt: X86EmulateCtxt) -> int:
    n = 8 if ctxt.op_bytes == 8 else 4
    low = int.from_bytes(to_bytes(ctxt.dst.val, n), "big")
    ctxt.dst.val = low if n == 8 else (ctxt.dst.val & ~0xFFFFFFFF) | low
    return X86EMUL_CONTINUE


def em_xchg(ctxt: X86EmulateCtxt) -> int:
    """Register source written now; memory destination with an implicit LOCK."""
    ctxt.src.val = ctxt.dst.val
    write_register_operand(ctxt, ctxt.src)
    ctxt.dst.val = ctxt.src.orig_val
    ctxt.lock_prefix = 1
    return X86EMUL_CONTINUE


def em_cwd(ctxt: X86EmulateCtxt) -> int:
    """CWD/CDQ/CQO: rDX = sign of rAX."""
    dst, src = ctxt.dst, ctxt.src
    dst.type, dst.bytes, dst.reg, dst.reg_shift = OP_REG, src.bytes, VCPU_REGS_RDX, 0
    dst.val = U64 if (src.val >> (src.bytes * 8 - 1)) & 1 else 0
    return X86EMUL_CONTINUE


def em_imul_3op(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.val = ctxt.src2.val
    return fastop(ctxt, em_imul)


def em_cmpxchg(ctxt: X86EmulateCtxt) -> int:
    """Compare rAX with dst; success writes src to dst, failure loads dst into rAX."""
    dst, src = ctxt.dst, ctxt.src
    dst.orig_val = dst.val
    dst.val = reg_read(ctxt, VCPU_REGS_RAX)
    src.orig_val = src.val
    src.val = dst.orig_val
    fastop(ctxt, em_cmp)
    if ctxt.eflags & X86_EFLAGS_ZF:
        src.type = OP_NONE
        dst.val = src.orig_val
    else:
        src.type, src.reg, src.reg_shift = OP_REG, VCPU_REGS_RAX, 0
        src.val = dst.orig_val
        dst.val = dst.orig_val  # a write cycle to dst with the value it had
    return X86EMUL_CONTINUE


def em_cmpxchg8b(ctxt: X86EmulateCtxt) -> int:
    old = ctxt.dst.orig_val
    if ctxt.dst.bytes == 16:  # CMPXCHG16B is not emulated
        return X86EMUL_UNHANDLEABLE
    if ((old & 0xFFFFFFFF) != (reg_read(ctxt, VCPU_REGS_RAX) & 0xFFFFFFFF)
            or (old >> 32) != (reg_read(ctxt, VCPU_REGS_RDX) & 0xFFFFFFFF)):
        reg_write(ctxt, VCPU_REGS_RAX, old & 0xFFFFFFFF)
        reg_write(ctxt, VCPU_REGS_RDX, (old >> 32) & 0xFFFFFFFF)
        ctxt.eflags &= ~X86_EFLAGS_ZF
    else:
        ctxt.dst.val = (((reg_read(ctxt, VCPU_REGS_RCX) & 0xFFFFFFFF) << 32)
                        | (reg_read(ctxt, VCPU_REGS_RBX) & 0xFFFFFFFF))
        ctxt.eflags |= X86_EFLAGS_ZF
    return X86EMUL_CONTINUE


def em_bsf_c(ctxt: X86EmulateCtxt) -> int:
    if ctxt.src.val == 0:  # no writeback, but flags are updated
        ctxt.dst.type = OP_NONE
    return fastop(ctxt, em_bsf)


def em_bsr_c(ctxt: X86EmulateCtxt) -> int:
    if ctxt.src.val == 0:
        ctxt.dst.type = OP_NONE
    return fastop(ctxt, em_bsr)


# --- BCD / AL tricks -------------------------------------------------------------------
def _set_szp_from_or(ctxt: X86EmulateCtxt) -> None:
    """`or $0, dst` to set PF/ZF/SF (as em_das/em_aam/em_aad do)."""
    src = ctxt.src
    src.type, src.val, src.bytes = OP_IMM, 0, 1
    fastop(ctxt, em_or)


def em_das(ctxt: X86EmulateCtxt) -> int:
    cf = bool(ctxt.eflags & X86_EFLAGS_CF)
    al = old_al = ctxt.dst.val & 0xFF
    old_cf, cf = cf, False
    af = bool(ctxt.eflags & X86_EFLAGS_AF)
    if (al & 0x0F) > 9 or af:
        al = (al - 6) & 0xFF
        cf = old_cf or al >= 250
        af = True
    else:
        af = False
    if old_al > 0x99 or old_cf:
        al = (al - 0x60) & 0xFF
        cf = True
    ctxt.dst.val = al
    _set_szp_from_or(ctxt)
    ctxt.eflags &= ~(X86_EFLAGS_AF | X86_EFLAGS_CF)
    ctxt.eflags |= (X86_EFLAGS_CF if cf else 0) | (X86_EFLAGS_AF if af else 0)
    return X86EMUL_CONTINUE


def em_aam(ctxt: X86EmulateCtxt) -> int:
    if ctxt.src.val == 0:
        return emulate_de(ctxt)
    al = ctxt.dst.val & 0xFF
    ah, al = al // ctxt.src.val, al % ctxt.src.val
    ctxt.dst.val = (ctxt.dst.val & 0xFFFF0000) | al | (ah << 8)
    _set_szp_from_or(ctxt)
    return X86EMUL_CONTINUE


def em_aad(ctxt: X86EmulateCtxt) -> int:
    al, ah = ctxt.dst.val & 0xFF, (ctxt.dst.val >> 8) & 0xFF
    al = (al + ah * ctxt.src.val) & 0xFF
    ctxt.dst.val = (ctxt.dst.val & 0xFFFF0000) | al
    _set_szp_from_or(ctxt)
    return X86EMUL_CONTINUE


# --- flags -----------------------------------------------------------------------------
def em_sahf(ctxt: X86EmulateCtxt) -> int:
    mask = X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | X86_EFLAGS_SF
    flags = mask & (reg_read(ctxt, VCPU_REGS_RAX) >> 8)
    ctxt.eflags = (ctxt.eflags & ~0xFF) | flags | X86_EFLAGS_FIXED
    return X86EMUL_CONTINUE


def em_lahf(ctxt: X86EmulateCtxt) -> int:
    rax = reg_rmw(ctxt, VCPU_REGS_RAX)
    reg_write(ctxt, VCPU_REGS_RAX, (rax & ~0xFF00) | ((ctxt.eflags & 0xFF) << 8))
    return X86EMUL_CONTINUE


def emulator_bad_iopl(ctxt: X86EmulateCtxt) -> bool:
    if ctxt.mode == X86EMUL_MODE_REAL:
        return False
    if ctxt.mode == X86EMUL_MODE_VM86:
        return True
    iopl = (ctxt.eflags & X86_EFLAGS_IOPL) >> X86_EFLAGS_IOPL_BIT
    return ctxt.ops.cpl(ctxt) > iopl


def em_cli(ctxt: X86EmulateCtxt) -> int:
    if emulator_bad_iopl(ctxt):
        return emulate_gp(ctxt, 0)
    ctxt.eflags &= ~X86_EFLAGS_IF
    return X86EMUL_CONTINUE


def em_sti(ctxt: X86EmulateCtxt) -> int:
    if emulator_bad_iopl(ctxt):
        return emulate_gp(ctxt, 0)
    ctxt.interruptibility = KVM_X86_SHADOW_INT_STI
    ctxt.eflags |= X86_EFLAGS_IF
    return X86EMUL_CONTINUE


# --- stack -----------------------------------------------------------------------------
def em_push(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.type = OP_NONE  # no writeback
    return emulate_push(ctxt, ctxt.src.val, ctxt.op_bytes)


def em_pop(ctxt: X86EmulateCtxt) -> int:
    rc, ctxt.dst.val = emulate_pop(ctxt, ctxt.op_bytes)
    return rc


def em_pushf(ctxt: X86EmulateCtxt) -> int:
    ctxt.src.val = ctxt.eflags & ~X86_EFLAGS_VM
    return em_push(ctxt)


def emulate_popf(ctxt: X86EmulateCtxt, length: int) -> tuple[int, int]:
    """POPF: which bits may change depends on mode, CPL and IOPL."""
    iopl = (ctxt.eflags & X86_EFLAGS_IOPL) >> X86_EFLAGS_IOPL_BIT
    cpl = ctxt.ops.cpl(ctxt)
    rc, val = emulate_pop(ctxt, length)
    if rc != X86EMUL_CONTINUE:
        return rc, 0
    change = (X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | X86_EFLAGS_SF
              | X86_EFLAGS_OF | X86_EFLAGS_TF | X86_EFLAGS_DF | X86_EFLAGS_NT
              | X86_EFLAGS_AC | X86_EFLAGS_ID)
    if ctxt.mode == X86EMUL_MODE_VM86:
        if iopl < 3:
            return emulate_gp(ctxt, 0), 0
        change |= X86_EFLAGS_IF
    elif ctxt.mode == X86EMUL_MODE_REAL:
        change |= X86_EFLAGS_IOPL | X86_EFLAGS_IF
    else:
        if cpl == 0:
            change |= X86_EFLAGS_IOPL
        if cpl <= iopl:
            change |= X86_EFLAGS_IF
    return rc, (ctxt.eflags & ~change) | (val & change)


def em_popf(ctxt: X86EmulateCtxt) -> int:
    dst = ctxt.dst
    dst.type, dst.reg, dst.reg_shift, dst.bytes = OP_REG, REG_EFLAGS, 0, ctxt.op_bytes
    rc, dst.val = emulate_popf(ctxt, ctxt.op_bytes)
    return rc


def em_push_sreg(ctxt: X86EmulateCtxt) -> int:
    ctxt.src.val = get_segment_selector(ctxt, ctxt.src2.val)
    if ctxt.op_bytes == 4:  # a 16-bit store into a 4-byte slot, as recent CPUs do
        rsp_increment(ctxt, -2)
        ctxt.op_bytes = 2
    return em_push(ctxt)


def em_pop_sreg(ctxt: X86EmulateCtxt) -> int:
    seg = ctxt.src2.val
    rc, selector = emulate_pop(ctxt, 2)
    if rc != X86EMUL_CONTINUE:
        return rc
    if seg == VCPU_SREG_SS:
        ctxt.interruptibility = KVM_X86_SHADOW_INT_MOV_SS
    if ctxt.op_bytes > 2:
        rsp_increment(ctxt, ctxt.op_bytes - 2)
    return load_segment_descriptor(ctxt, selector & 0xFFFF, seg)


def em_pusha(ctxt: X86EmulateCtxt) -> int:
    old_esp = reg_read(ctxt, VCPU_REGS_RSP)
    for reg in range(VCPU_REGS_RDI + 1):
        ctxt.src.val = old_esp if reg == VCPU_REGS_RSP else reg_read(ctxt, reg)
        rc = em_push(ctxt)
        if rc != X86EMUL_CONTINUE:
            return rc
    return X86EMUL_CONTINUE


def em_popa(ctxt: X86EmulateCtxt) -> int:
    reg = VCPU_REGS_RDI
    while reg >= VCPU_REGS_RAX:
        if reg == VCPU_REGS_RSP:
            rsp_increment(ctxt, ctxt.op_bytes)
            reg -= 1
        rc, val = emulate_pop(ctxt, ctxt.op_bytes)
        if rc != X86EMUL_CONTINUE:
            return rc
        reg_write(ctxt, reg, assign_register(reg_rmw(ctxt, reg), val, ctxt.op_bytes))
        reg -= 1
    return X86EMUL_CONTINUE


def em_enter(ctxt: X86EmulateCtxt) -> int:
    frame_size, nesting_level = ctxt.src.val, ctxt.src2.val & 31
    if nesting_level:
        return X86EMUL_UNHANDLEABLE
    rc = emulate_push(ctxt, reg_read(ctxt, VCPU_REGS_RBP), stack_size(ctxt))
    if rc != X86EMUL_CONTINUE:
        return rc
    mask = stack_mask(ctxt)
    rsp = reg_read(ctxt, VCPU_REGS_RSP)
    reg_write(ctxt, VCPU_REGS_RBP, assign_masked(reg_rmw(ctxt, VCPU_REGS_RBP), rsp, mask))
    reg_write(ctxt, VCPU_REGS_RSP, assign_masked(rsp, rsp - frame_size, mask))
    return X86EMUL_CONTINUE


def em_leave(ctxt: X86EmulateCtxt) -> int:
    mask = stack_mask(ctxt)
    reg_write(ctxt, VCPU_REGS_RSP, assign_masked(reg_rmw(ctxt, VCPU_REGS_RSP),
                                                 reg_read(ctxt, VCPU_REGS_RBP), mask))
    rc, val = emulate_pop(ctxt, ctxt.op_bytes)
    if rc == X86EMUL_CONTINUE:  # the pop lands in the low op_bytes of RBP
        low = (1 << (ctxt.op_bytes * 8)) - 1
        reg_write(ctxt, VCPU_REGS_RBP, (reg_rmw(ctxt, VCPU_REGS_RBP) & ~low) | val)
    return rc


# --- port I/O --------------------------------------------------------------------------
def emulator_io_port_access_allowed(ctxt: X86EmulateCtxt, port: int, length: int) -> bool:
    """The TSS I/O permission bitmap."""
    ops = ctxt.ops
    if ctxt.features.enable_vmware_backdoor and port in (0x5658, 0x5659):
        return True
    tr = ops.get_segment(ctxt, VCPU_SREG_TR)
    if tr is None or not tr[1].p or tr[1].limit_scaled() < 103:
        return False
    desc, base3 = tr[1], tr[2]
    base = desc.base | (base3 << 32)
    buf = bytearray(2)
    if ops.read_std(ctxt, base + 102, memoryview(buf), 2, None, True) != X86EMUL_CONTINUE:
        return False
    io_bitmap_ptr = int.from_bytes(buf, "little")
    if io_bitmap_ptr + port // 8 > desc.limit_scaled():
        return False
    if ops.read_std(ctxt, base + io_bitmap_ptr + port // 8, memoryview(buf), 2, None,
                    True) != X86EMUL_CONTINUE:
        return False
    perm = int.from_bytes(buf, "little")
    return not (perm >> (port & 7)) & ((1 << length) - 1)


def emulator_io_permitted(ctxt: X86EmulateCtxt, port: int, length: int) -> bool:
    if ctxt.perm_ok:
        return True
    if emulator_bad_iopl(ctxt) and not emulator_io_port_access_allowed(ctxt, port, length):
        return False
    ctxt.perm_ok = True
    return True


def check_perm_in(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.bytes = min(ctxt.dst.bytes, 4)
    if not emulator_io_permitted(ctxt, ctxt.src.val & 0xFFFF, ctxt.dst.bytes):
        return emulate_gp(ctxt, 0)
    return X86EMUL_CONTINUE


def check_perm_out(ctxt: X86EmulateCtxt) -> int:
    ctxt.src.bytes = min(ctxt.src.bytes, 4)
    if not emulator_io_permitted(ctxt, ctxt.dst.val & 0xFFFF, ctxt.src.bytes):
        return emulate_gp(ctxt, 0)
    return X86EMUL_CONTINUE


def em_in(ctxt: X86EmulateCtxt) -> int:
    val = pio_in_emulated(ctxt, ctxt.dst.bytes, ctxt.src.val & 0xFFFF)
    if val is None:
        return X86EMUL_IO_NEEDED
    if ctxt.dst.type != OP_MEM_STR:
        ctxt.dst.val = val
    return X86EMUL_CONTINUE


def em_out(ctxt: X86EmulateCtxt) -> int:
    """One element per call: a REP OUTS exits to userspace with count 1 each time."""
    ctxt.ops.pio_out_emulated(ctxt, ctxt.src.bytes, ctxt.dst.val & 0xFFFF,
                              to_bytes(ctxt.src.val, ctxt.src.bytes), 1)
    ctxt.dst.type = OP_NONE
    return X86EMUL_CONTINUE


