"""Model of emulate.c's segment loading and RIP assignment: __load_segment_descriptor,
emulator_recalc_and_set_mode, assign_eip_near/far, jmp_rel.
"""

from __future__ import annotations

from enum import IntEnum

from .codes import (EFER_LMA, GP_VECTOR, NP_VECTOR, SS_VECTOR, TS_VECTOR, VCPU_SREG_CS,
                    VCPU_SREG_GS, VCPU_SREG_LDTR, VCPU_SREG_SS, VCPU_SREG_TR, MSR_EFER,
                    X86_CR0_PE, X86_EFLAGS_VM, X86EMUL_CONTINUE, X86EMUL_F_DT_LOAD,
                    X86EMUL_F_FETCH, X86EMUL_MODE_PROT16, X86EMUL_MODE_PROT32,
                    X86EMUL_MODE_PROT64, X86EMUL_MODE_REAL, X86EMUL_MODE_VM86,
                    X86EMUL_UNHANDLEABLE)
from .ctxt import X86EmulateCtxt
from .memaccess import (SegmentedAddress, __linearize, emulate_exception, emulate_gp,
                        linear_read_system, linear_write_system)
from .ops import DescPtr, DescStruct

U64 = 0xFFFFFFFFFFFFFFFF


class X86TransferType(IntEnum):
    """enum x86_transfer_type: why a segment is being loaded."""

    X86_TRANSFER_NONE = 0
    X86_TRANSFER_CALL_JMP = 1
    X86_TRANSFER_RET = 2
    X86_TRANSFER_TASK_SWITCH = 3


NONE, CALL_JMP, RET, TASK_SWITCH = (X86TransferType(i) for i in range(4))


def get_segment_selector(ctxt: X86EmulateCtxt, seg: int) -> int:
    s = ctxt.ops.get_segment(ctxt, seg)
    return s[0] if s is not None else 0


def get_msr(ctxt: X86EmulateCtxt, index: int) -> int:
    """ops.get_msr, 0 when it fails (the kernel's `u64 efer = 0; get_msr(...)` idiom)."""
    rc, val = ctxt.ops.get_msr(ctxt, index)
    return val if rc == 0 else 0


def _descriptor_table(ctxt: X86EmulateCtxt, selector: int) -> DescPtr:
    """GDT, or the LDT when the selector's TI bit is set."""
    if not selector & 4:
        return ctxt.ops.get_gdt(ctxt)
    ldt = ctxt.ops.get_segment(ctxt, VCPU_SREG_LDTR)
    if ldt is None:
        return DescPtr(0, 0)
    _, desc, base3 = ldt
    return DescPtr(desc.limit_scaled(), desc.base | (base3 << 32))


def get_descriptor_ptr(ctxt: X86EmulateCtxt, selector: int) -> tuple[int, int]:
    dt = _descriptor_table(ctxt, selector)
    index = selector >> 3
    if dt.size < index * 8 + 7:
        return emulate_gp(ctxt, selector & 0xFFFC), 0
    addr = dt.address + index * 8
    if addr >> 32 and not get_msr(ctxt, MSR_EFER) & EFER_LMA:
        addr &= 0xFFFFFFFF
    return X86EMUL_CONTINUE, addr


def read_segment_descriptor(ctxt: X86EmulateCtxt,
                            selector: int) -> tuple[int, DescStruct, int]:
    rc, addr = get_descriptor_ptr(ctxt, selector)
    if rc != X86EMUL_CONTINUE:
        return rc, DescStruct(), 0
    rc, raw = linear_read_system(ctxt, addr, 8)
    return rc, DescStruct.unpack(raw) if rc == X86EMUL_CONTINUE else DescStruct(), addr


def write_segment_descriptor(ctxt: X86EmulateCtxt, selector: int, desc: DescStruct) -> int:
    rc, addr = get_descriptor_ptr(ctxt, selector)
    if rc != X86EMUL_CONTINUE:
        return rc
    return linear_write_system(ctxt, addr, desc.pack())


def _check_cs(ctxt: X86EmulateCtxt, desc: DescStruct, rpl: int, cpl: int,
              transfer: X86TransferType) -> int | None:
    """CS privilege rules; None = ok, else X86EMUL_* code or -1 for 'raise exception'."""
    dpl, conforming = desc.dpl, desc.type & 4
    if transfer == NONE or not desc.type & 8:
        return -1
    if transfer == RET:
        if rpl < cpl:
            return -1
        if rpl > cpl:
            return X86EMUL_UNHANDLEABLE  # outer-privilege return not implemented
    if transfer in (RET, TASK_SWITCH):
        if (conforming and dpl > rpl) or (not conforming and dpl != rpl):
            return -1
    elif (conforming and dpl > cpl) or (not conforming and (rpl > cpl or dpl != cpl)):
        return -1
    if desc.d and desc.l and get_msr(ctxt, MSR_EFER) & EFER_LMA:
        return -1
    return None


def __load_segment_descriptor(ctxt: X86EmulateCtxt, selector: int, seg: int, cpl: int,
                              transfer: X86TransferType) -> tuple[int, DescStruct]:
    """Validate and load a selector into a segment register via ops.set_segment.

    Simplified: no CET shadow-stack pointer check (the model has no CET state).
    """
    ops = ctxt.ops
    desc, base3 = DescStruct(), 0
    if ctxt.mode == X86EMUL_MODE_REAL:
        cur = ops.get_segment(ctxt, seg)
        desc = cur[1].copy() if cur is not None else DescStruct()
        desc.base = selector << 4
        ops.set_segment(ctxt, selector, desc, 0, seg)
        return X86EMUL_CONTINUE, desc
    if seg <= VCPU_SREG_GS and ctxt.mode == X86EMUL_MODE_VM86:
        desc = DescStruct(base=selector << 4, limit=0xFFFF, type=3, p=1, s=1, dpl=3)
        ops.set_segment(ctxt, selector, desc, 0, seg)
        return X86EMUL_CONTINUE, desc

    rpl = selector & 3
    err_vec, err_code = GP_VECTOR, 0
    if seg == VCPU_SREG_TR and selector & 4:
        return emulate_exception(ctxt, err_vec, err_code, True), desc
    if not selector & ~3:  # null selector
        if seg in (VCPU_SREG_CS, VCPU_SREG_TR):
            return emulate_exception(ctxt, err_vec, err_code, True), desc
        if seg == VCPU_SREG_SS:
            if ctxt.mode != X86EMUL_MODE_PROT64 or rpl != cpl:
                return emulate_exception(ctxt, err_vec, err_code, True), desc
            desc = DescStruct(type=3, p=1, s=1, dpl=cpl, d=1, g=1)
        else:
            desc = DescStruct(type=0, s=0, p=0, limit=0)
        ops.set_segment(ctxt, selector, desc, base3, seg)
        return X86EMUL_CONTINUE, desc

    rc, desc, desc_addr = read_segment_descriptor(ctxt, selector)
    if rc != X86EMUL_CONTINUE:
        return rc, desc
    err_code = selector & 0xFFFC
    err_vec = TS_VECTOR if transfer == TASK_SWITCH else GP_VECTOR
    if seg <= VCPU_SREG_GS and not desc.s:
        if transfer == CALL_JMP:
            return X86EMUL_UNHANDLEABLE, desc
        return emulate_exception(ctxt, err_vec, err_code, True), desc
    dpl = desc.dpl
    bad = False
    if seg == VCPU_SREG_SS:
        bad = rpl != cpl or (desc.type & 0xA) != 0x2 or dpl != cpl
    elif seg == VCPU_SREG_CS:
        r = _check_cs(ctxt, desc, rpl, cpl, transfer)
        if r is not None and r >= 0:
            return r, desc
        bad = r is not None
        selector = (selector & 0xFFFC) | cpl
    elif seg == VCPU_SREG_TR:
        bad = bool(desc.s) or desc.type not in (1, 9)
    elif seg == VCPU_SREG_LDTR:
        bad = bool(desc.s) or desc.type != 2
    else:
        bad = ((desc.type & 0xA) == 0x8
               or ((desc.type & 0xC) != 0xC and (rpl > dpl or cpl > dpl)))
    if bad:
        return emulate_exception(ctxt, err_vec, err_code, True), desc
    if not desc.p:
        vec = SS_VECTOR if seg == VCPU_SREG_SS else NP_VECTOR
        return emulate_exception(ctxt, vec, err_code, True), desc
    if desc.s:
        if not desc.type & 1:  # mark accessed
            desc.type |= 1
            rc = write_segment_descriptor(ctxt, selector, desc)
            if rc != X86EMUL_CONTINUE:
                return rc, desc
    elif ctxt.mode == X86EMUL_MODE_PROT64:
        rc, raw = linear_read_system(ctxt, desc_addr + 8, 4)
        if rc != X86EMUL_CONTINUE:
            return rc, desc
        base3 = int.from_bytes(raw, "little")
        if not ops.is_canonical_addr(ctxt, desc.base | (base3 << 32), X86EMUL_F_DT_LOAD):
            return emulate_gp(ctxt, err_code), desc
    if seg == VCPU_SREG_TR:
        old = desc.copy()
        desc.type |= 2  # busy
        rc = ops.cmpxchg_emulated(ctxt, desc_addr, old.pack(), desc.pack(), 8, ctxt.exception)
        if rc != X86EMUL_CONTINUE:
            return rc, desc
    ops.set_segment(ctxt, selector, desc, base3, seg)
    return X86EMUL_CONTINUE, desc


def load_segment_descriptor(ctxt: X86EmulateCtxt, selector: int, seg: int) -> int:
    """MOV/POP/LxS to a segment register."""
    cpl = ctxt.ops.cpl(ctxt)
    if seg == VCPU_SREG_SS and selector == 3 and ctxt.mode == X86EMUL_MODE_PROT64:
        return emulate_exception(ctxt, GP_VECTOR, 0, True)
    return __load_segment_descriptor(ctxt, selector, seg, cpl, NONE)[0]


def emulator_recalc_and_set_mode(ctxt: X86EmulateCtxt) -> int:
    """Recompute ctxt.mode from CR0.PE, EFLAGS.VM, EFER.LMA and CS.L/D."""
    efer = get_msr(ctxt, MSR_EFER)
    if not ctxt.ops.get_cr(ctxt, 0) & X86_CR0_PE:
        if efer & EFER_LMA:
            return X86EMUL_UNHANDLEABLE
        ctxt.mode = X86EMUL_MODE_REAL
        return X86EMUL_CONTINUE
    if ctxt.eflags & X86_EFLAGS_VM:
        if efer & EFER_LMA:
            return X86EMUL_UNHANDLEABLE
        ctxt.mode = X86EMUL_MODE_VM86
        return X86EMUL_CONTINUE
    cs = ctxt.ops.get_segment(ctxt, VCPU_SREG_CS)
    if cs is None:
        return X86EMUL_UNHANDLEABLE
    desc = cs[1]
    if efer & EFER_LMA and desc.l:
        ctxt.mode = X86EMUL_MODE_PROT64
    else:
        ctxt.mode = X86EMUL_MODE_PROT32 if desc.d else X86EMUL_MODE_PROT16
    return X86EMUL_CONTINUE


def assign_eip(ctxt: X86EmulateCtxt, dst: int) -> int:
    """Set _eip after a CS-limit / canonical check at the operand size."""
    ea = dst & U64 if ctxt.op_bytes == 8 else dst & ((1 << (ctxt.op_bytes << 3)) - 1)
    rc, _, _ = __linearize(ctxt, SegmentedAddress(ea, VCPU_SREG_CS), 1, ctxt.mode,
                           X86EMUL_F_FETCH)
    if rc == X86EMUL_CONTINUE:
        ctxt._eip = ea
    return rc


def assign_eip_near(ctxt: X86EmulateCtxt, dst: int) -> int:
    return assign_eip(ctxt, dst)


def assign_eip_far(ctxt: X86EmulateCtxt, dst: int) -> int:
    rc = emulator_recalc_and_set_mode(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    return assign_eip(ctxt, dst)


def jmp_rel(ctxt: X86EmulateCtxt, rel: int) -> int:
    """Relative branch; `rel` is the (sign-extended) displacement as stored in src.val."""
    rel &= 0xFFFFFFFF
    rel = rel - (1 << 32) if rel & 0x80000000 else rel  # the C `int rel` parameter
    return assign_eip_near(ctxt, ctxt._eip + rel)

