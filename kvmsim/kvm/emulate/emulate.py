"""Model of emulate.c's execute phase: x86_emulate_insn and its built-in opcode switch.

Steps (reference §9.7): 1 mem_read.pos = 0; 2 LOCK / far-pointer #UD; 3 No64, Undefined,
Sse/Mmx (#UD, #NM), intercept PRE_EXCEPT, Prot, Priv, check_perm, intercept POST_EXCEPT,
REP with rCX == 0; 4 operand reads through segmented_read; 5 intercept POST_MEMACCESS;
6 RF; 7 execute (executor, fastop or the switch); 8 writeback; 9 string pointer update;
10 REP accounting and EMULATION_RESTART; 11 eip = _eip and the result mapping (§6.2).
"""

from __future__ import annotations

from .codes import (EMULATION_FAILED, EMULATION_INTERCEPTED, EMULATION_OK, EMULATION_RESTART,
                    MF_VECTOR, OP_MEM, OP_MM, OP_NONE, OP_REG, PF_VECTOR, PFERR_WRITE_MASK, REPE_PREFIX,
                    REPNE_PREFIX, VCPU_REGS_RAX, VCPU_REGS_RCX, VCPU_REGS_RDI,
                    VCPU_REGS_RSI, X86_CR0_EM, X86_CR0_TS, X86_CR4_OSFXSR, X86_CR4_OSXSAVE,
                    X86_EFLAGS_CF, X86_EFLAGS_DF, X86_EFLAGS_OF, X86_EFLAGS_RF,
                    X86_EFLAGS_ZF, X86EMUL_CONTINUE, X86EMUL_INTERCEPTED, X86EMUL_IO_NEEDED,
                    X86EMUL_MODE_PROT16, X86EMUL_MODE_PROT64, X86EMUL_PROPAGATE_FAULT,
                    X86EMUL_UNHANDLEABLE)
from .ctxt import (REG_EFLAGS, X86EmulateCtxt, reg_read, reg_write, write_register_operand,
                   writeback_registers)
from .em_basic import em_xchg
from .em_branch import emulate_int
from .fastop import fastop, test_cc
from .flags import (CheckPerm, DstDI, DstMask, Fastop, ImplicitOps, Intercept, Mmx, Mov,
                    No64, NoAccess, NoWrite, Priv, PrivUD, Prot, SrcMask, SrcMemFAddr, SrcSI,
                    SrcWrite, Sse, String, Undefined, Lock)
from kvmsim.probe import kfunc

from .memaccess import (address_mask, emulate_exception, emulate_gp, emulate_nm, emulate_ud,
                        register_address, register_address_increment, segmented_read,
                        writeback)
from .ops import X86InstructionInfo, X86InterceptStage
from .segments import jmp_rel

U64 = 0xFFFFFFFFFFFFFFFF
X87_FSW_ES = 1 << 7        # x87 status word: error summary (an unmasked exception is pending)
_RARE = No64 | Undefined | Sse | Mmx | Intercept | CheckPerm | Priv | Prot | String
_REP_RCX_ZERO = -2   # _rare_checks: a REP string with rCX == 0 is finished (the kernel's "goto done")


def emulator_check_intercept(ctxt: X86EmulateCtxt, stage: X86InterceptStage) -> int:
    info = X86InstructionInfo(
        intercept=ctxt.intercept, rep_prefix=ctxt.rep_prefix, modrm_mod=ctxt.modrm_mod,
        modrm_reg=ctxt.modrm_reg, modrm_rm=ctxt.modrm_rm, src_val=ctxt.src.val,
        dst_val=ctxt.dst.val, src_bytes=ctxt.src.bytes, dst_bytes=ctxt.dst.bytes,
        src_type=ctxt.src.type, dst_type=ctxt.dst.type, ad_bytes=ctxt.ad_bytes,
        rip=ctxt.eip, next_rip=ctxt._eip)
    return ctxt.ops.intercept(ctxt, info, stage)


def string_insn_completed(ctxt: X86EmulateCtxt) -> bool:
    """REPE/REPNE CMPS/SCAS also stop on ZF."""
    if ctxt.b in (0xA6, 0xA7, 0xAE, 0xAF):
        zf = ctxt.eflags & X86_EFLAGS_ZF
        return ((ctxt.rep_prefix == REPE_PREFIX and not zf)
                or (ctxt.rep_prefix == REPNE_PREFIX and bool(zf)))
    return False


def string_registers_quirk(ctxt: X86EmulateCtxt) -> None:
    """Intel zeroes RCX and truncates RSI/RDI for a32 REP MOVS/STOS with ECX == 0."""
    if ctxt.ad_bytes != 4:
        return
    _, ebx, ecx, edx = ctxt.ops.get_cpuid(ctxt, 0, 0, True)
    if (ebx, ecx, edx) != (0x756E6547, 0x6C65746E, 0x49656E69):  # "GenuineIntel"
        return
    reg_write(ctxt, VCPU_REGS_RCX, 0)
    if ctxt.b in (0xA4, 0xA5):
        reg_write(ctxt, VCPU_REGS_RSI, reg_read(ctxt, VCPU_REGS_RSI) & 0xFFFFFFFF)
    if ctxt.b in (0xA4, 0xA5, 0xAA, 0xAB):
        reg_write(ctxt, VCPU_REGS_RDI, reg_read(ctxt, VCPU_REGS_RDI) & 0xFFFFFFFF)


def string_addr_inc(ctxt: X86EmulateCtxt, reg: int, op) -> None:  # type: ignore[no-untyped-def]
    step = -op.count if ctxt.eflags & X86_EFLAGS_DF else op.count
    register_address_increment(ctxt, reg, step * op.bytes)
    op.ea = register_address(ctxt, reg)


def flush_pending_x87_faults(ctxt: X86EmulateCtxt) -> int:
    """KVM runs FWAIT on the guest's x87 state before touching MMX registers: an unmasked x87
    exception still pending (FSW.ES) is #MF.  (The host's FWAIT is modelled by that bit.)"""
    if ctxt.ops.fpu_fnstsw(ctxt) & X87_FSW_ES:
        return emulate_exception(ctxt, MF_VECTOR, 0, False)
    return X86EMUL_CONTINUE


def _rare_checks(ctxt: X86EmulateCtxt, check_intercepts: bool) -> int | None:
    """Step 3. Returns an X86EMUL_* code to stop with, _REP_RCX_ZERO for REP rCX == 0."""
    ops, d = ctxt.ops, ctxt.d
    if (ctxt.mode == X86EMUL_MODE_PROT64 and d & No64) or d & Undefined:
        return emulate_ud(ctxt)
    if d & (Sse | Mmx):
        cr0 = ops.get_cr(ctxt, 0)
        if cr0 & X86_CR0_EM or (d & Sse and not ops.get_cr(ctxt, 4) & X86_CR4_OSFXSR):
            return emulate_ud(ctxt)
        if ctxt.vex and not ops.get_cr(ctxt, 4) & X86_CR4_OSXSAVE:
            return emulate_ud(ctxt)
        if cr0 & X86_CR0_TS:
            return emulate_nm(ctxt)
        if d & Mmx:
            rc = flush_pending_x87_faults(ctxt)
            if rc != X86EMUL_CONTINUE:
                return rc
            for op in (ctxt.src, ctxt.src2) if d & Mov else (ctxt.src, ctxt.src2, ctxt.dst):
                if op.type == OP_MM:
                    op.val = ops.read_mmx_reg(ctxt, op.mm)
    if check_intercepts and ctxt.intercept:
        rc = emulator_check_intercept(ctxt, X86InterceptStage.X86_ICPT_PRE_EXCEPT)
        if rc != X86EMUL_CONTINUE:
            return rc
    if d & Prot and ctxt.mode < X86EMUL_MODE_PROT16:
        return emulate_ud(ctxt)
    if d & Priv and ops.cpl(ctxt):
        return emulate_ud(ctxt) if d & PrivUD else emulate_gp(ctxt, 0)
    if d & CheckPerm and ctxt.check_perm is not None:
        rc = ctxt.check_perm(ctxt)
        if rc != X86EMUL_CONTINUE:
            return rc
    if check_intercepts and d & Intercept:
        rc = emulator_check_intercept(ctxt, X86InterceptStage.X86_ICPT_POST_EXCEPT)
        if rc != X86EMUL_CONTINUE:
            return rc
    if ctxt.rep_prefix and d & String:
        if address_mask(ctxt, reg_read(ctxt, VCPU_REGS_RCX)) == 0:
            string_registers_quirk(ctxt)
            ctxt.eip = ctxt._eip
            ctxt.eflags &= ~X86_EFLAGS_RF
            return _REP_RCX_ZERO
    return None


@kfunc()
def x86_emulate_insn(ctxt: X86EmulateCtxt, check_intercepts: bool = False) -> int:
    """Execute the decoded instruction. EMULATION_OK / FAILED / RESTART / INTERCEPTED.

    Steps 1-11 run inline (no per-step helper calls on the common path); the rare
    checks of step 3 and the string/REP tail of steps 9-10 stay in helpers.
    """
    src, dst, d = ctxt.src, ctxt.dst, ctxt.d
    saved_dst_type = dst.type
    ctxt.mem_read.pos = 0

    # 2. LOCK / far-pointer #UD
    if ctxt.lock_prefix and (not d & Lock or saved_dst_type != OP_MEM):
        return _done(ctxt, emulate_ud(ctxt))
    if (d & SrcMask) == SrcMemFAddr and src.type != OP_MEM:
        return _done(ctxt, emulate_ud(ctxt))
    # 3. rare checks
    if d & _RARE:
        rc = _rare_checks(ctxt, check_intercepts)
        if rc == _REP_RCX_ZERO:
            return _done(ctxt, X86EMUL_CONTINUE)  # REP with rCX == 0: done, RIP advanced
        if rc is not None:
            return _done(ctxt, rc)

    # 4. operand reads (_read_operands, inlined)
    if src.type == OP_MEM and not d & NoAccess:
        rc, val = segmented_read(ctxt, src, src.bytes)   # src.addr.mem
        src.val = val
        if rc != X86EMUL_CONTINUE:
            if rc == X86EMUL_IO_NEEDED:
                return EMULATION_OK  # _done(): userspace completes the read, nothing to commit
            return _done(ctxt, rc)
        src.orig_val = val
    src2 = ctxt.src2
    if src2.type == OP_MEM:
        rc, src2.val = segmented_read(ctxt, src2, src2.bytes)
        if rc != X86EMUL_CONTINUE:
            return _done(ctxt, rc)
    if (d & DstMask) != ImplicitOps:
        if dst.type == OP_MEM and not d & Mov:
            rc, dst.val = segmented_read(ctxt, dst, dst.bytes)
            if rc != X86EMUL_CONTINUE:
                if (not d & NoWrite and rc == X86EMUL_PROPAGATE_FAULT
                        and ctxt.exception.vector == PF_VECTOR):
                    ctxt.exception.error_code |= PFERR_WRITE_MASK
                return _done(ctxt, rc)
        dst.orig_val = dst.val

    # 5. intercept POST_MEMACCESS
    if check_intercepts and d & Intercept:
        rc = emulator_check_intercept(ctxt, X86InterceptStage.X86_ICPT_POST_MEMACCESS)
        if rc != X86EMUL_CONTINUE:
            return _done(ctxt, rc)
    # 6. RF
    string_rep = ctxt.rep_prefix and d & String
    if string_rep:
        ctxt.eflags |= X86_EFLAGS_RF
    else:
        ctxt.eflags &= ~X86_EFLAGS_RF

    # 7. execute: executor, fastop, or the built-in switch
    execute = ctxt.execute
    if execute is not None:
        rc = fastop(ctxt, execute) if d & Fastop else execute(ctxt)
    else:
        opcode_len = ctxt.opcode_len
        if opcode_len == 3:
            handler = _nop  # threebyte_insn: every 0F 38 entry has an executor
        else:
            handler = (ONE_BYTE_SWITCH if opcode_len == 1 else TWO_BYTE_SWITCH).get(ctxt.b)
        if handler is None:
            return EMULATION_FAILED  # cannot_emulate
        rc = handler(ctxt)
    if rc != X86EMUL_CONTINUE:
        return _done(ctxt, rc)

    # 8. writeback
    if d & SrcWrite:
        rc = writeback(ctxt, src)
        if rc != X86EMUL_CONTINUE:
            return _done(ctxt, rc)
    if not d & NoWrite:
        if dst.type == OP_REG:  # writeback() of a register destination, inlined
            reg = dst.reg
            if dst.bytes == 4 and reg != REG_EFLAGS and ctxt.regs_valid >> reg & 1:
                ctxt._regs[reg] = dst.val & 0xFFFFFFFF  # assign_register zero-extends
                ctxt.regs_dirty |= 1 << reg
            else:
                write_register_operand(ctxt, dst)
        else:
            rc = writeback(ctxt, dst)
            if rc != X86EMUL_CONTINUE:
                return _done(ctxt, rc)
    dst.type = saved_dst_type  # the decode may be reused by a string restart
    # 9-10. string pointers, REP accounting
    if d & String or (d & SrcMask) == SrcSI or (d & DstMask) == DstDI:
        rc = _string_tail(ctxt, d, saved_dst_type)
        if rc is not None:
            return rc
    # 11. commit
    ctxt.eip = ctxt._eip if ctxt.mode == X86EMUL_MODE_PROT64 else ctxt._eip & 0xFFFFFFFF
    # writeback_registers, inlined
    dirty = ctxt.regs_dirty
    if dirty:
        write_gpr, regs = ctxt.ops.write_gpr, ctxt._regs
        reg = 0
        while dirty:
            if dirty & 1:
                write_gpr(ctxt, reg, regs[reg])
            dirty >>= 1
            reg += 1
    return EMULATION_OK


def _done(ctxt: X86EmulateCtxt, rc: int) -> int:
    """Map the X86EMUL_* outcome (§6.2); commit registers only on CONTINUE.

    EMULATION_FAILED (cannot_emulate) passes through unchanged.
    """
    if rc == EMULATION_FAILED:
        return rc
    if rc == X86EMUL_PROPAGATE_FAULT:
        if ctxt.exception.vector > 0x1F:  # KVM_EMULATOR_BUG_ON
            ctxt.ops.vm_bugged(ctxt)
            return EMULATION_FAILED
        ctxt.have_exception = True
    if rc == X86EMUL_INTERCEPTED:
        return EMULATION_INTERCEPTED
    if rc == X86EMUL_CONTINUE:
        writeback_registers(ctxt)
    return EMULATION_FAILED if rc == X86EMUL_UNHANDLEABLE else EMULATION_OK


def _string_tail(ctxt: X86EmulateCtxt, d: int, saved_dst_type: int) -> int | None:
    """Steps 9-10: string pointer update, REP accounting and EMULATION_RESTART.

    Returns None to go on to the RIP update, else x86_emulate_insn's result.
    """
    if (d & SrcMask) == SrcSI:
        string_addr_inc(ctxt, VCPU_REGS_RSI, ctxt.src)
    if (d & DstMask) == DstDI:
        string_addr_inc(ctxt, VCPU_REGS_RDI, ctxt.dst)
    if ctxt.rep_prefix and d & String:
        r = ctxt.io_read
        count = ctxt.src.count if (d & SrcMask) == SrcSI else ctxt.dst.count
        register_address_increment(ctxt, VCPU_REGS_RCX, -count)
        if not string_insn_completed(ctxt):
            # Re-enter the guest when the PIO read-ahead is drained or, without one,
            # every 1024 iterations; otherwise loop inside KVM.
            if ((r.end != 0 or reg_read(ctxt, VCPU_REGS_RCX) & 0x3FF)
                    and (r.end == 0 or r.end != r.pos)):
                ctxt.mem_read.end = 0
                writeback_registers(ctxt)
                return EMULATION_RESTART
            return _done(ctxt, X86EMUL_CONTINUE)  # skip the RIP update: the guest re-executes
        ctxt.eflags &= ~X86_EFLAGS_RF
    return None


# --- the built-in switch: opcodes whose table entry has no executor -------------------
def _jcc(ctxt: X86EmulateCtxt) -> int:
    if test_cc(ctxt.b, ctxt.eflags):
        return jmp_rel(ctxt, ctxt.src.val)
    return X86EMUL_CONTINUE


def _lea(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.val = ctxt.src.ea
    return X86EMUL_CONTINUE


def _nop_or_xchg(ctxt: X86EmulateCtxt) -> int:
    if ctxt.dst.reg == VCPU_REGS_RAX and ctxt.dst.reg_shift == 0:
        ctxt.dst.type = OP_NONE
        return X86EMUL_CONTINUE
    return em_xchg(ctxt)


def _cbw(ctxt: X86EmulateCtxt) -> int:
    n = ctxt.op_bytes * 4  # sign-extend the low half of rAX
    v = ctxt.dst.val & ((1 << n) - 1)
    ctxt.dst.val = (v - (1 << n) if v >> (n - 1) else v) & U64
    return X86EMUL_CONTINUE


def _into(ctxt: X86EmulateCtxt) -> int:
    return emulate_int(ctxt, 4) if ctxt.eflags & X86_EFLAGS_OF else X86EMUL_CONTINUE


def _jmp_rel(ctxt: X86EmulateCtxt) -> int:
    rc = jmp_rel(ctxt, ctxt.src.val)
    ctxt.dst.type = OP_NONE
    return rc


def _halt(ctxt: X86EmulateCtxt) -> int:
    ctxt.ops.halt(ctxt)
    return X86EMUL_CONTINUE


def _set_eflags(clear: int, set_: int, toggle: int = 0):  # type: ignore[no-untyped-def]
    def flag_op(ctxt: X86EmulateCtxt) -> int:
        ctxt.eflags = ((ctxt.eflags & ~clear) | set_) ^ toggle
        return X86EMUL_CONTINUE
    return flag_op


ONE_BYTE_SWITCH = {
    **{b: _jcc for b in range(0x70, 0x80)},
    0x8D: _lea,
    **{b: _nop_or_xchg for b in range(0x90, 0x98)},
    0x98: _cbw,
    0xCC: lambda ctxt: emulate_int(ctxt, 3),
    0xCD: lambda ctxt: emulate_int(ctxt, ctxt.src.val & 0xFF),
    0xCE: _into,
    0xE9: _jmp_rel,
    0xEB: _jmp_rel,
    0xF4: _halt,
    0xF5: _set_eflags(0, 0, X86_EFLAGS_CF),   # cmc
    0xF8: _set_eflags(X86_EFLAGS_CF, 0),      # clc
    0xF9: _set_eflags(0, X86_EFLAGS_CF),      # stc
    0xFC: _set_eflags(X86_EFLAGS_DF, 0),      # cld
    0xFD: _set_eflags(0, X86_EFLAGS_DF),      # std
}


def _wbinvd(ctxt: X86EmulateCtxt) -> int:
    ctxt.ops.wbinvd(ctxt)
    return X86EMUL_CONTINUE


def _nop(ctxt: X86EmulateCtxt) -> int:
    return X86EMUL_CONTINUE


def _cr_read(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.val = ctxt.ops.get_cr(ctxt, ctxt.modrm_reg)
    return X86EMUL_CONTINUE


def _dr_read(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.val = ctxt.ops.get_dr(ctxt, ctxt.modrm_reg)
    return X86EMUL_CONTINUE


def _cmov(ctxt: X86EmulateCtxt) -> int:
    if test_cc(ctxt.b, ctxt.eflags):
        ctxt.dst.val = ctxt.src.val
    elif ctxt.op_bytes != 4:
        ctxt.dst.type = OP_NONE  # a 32-bit CMOV still zero-extends its destination
    return X86EMUL_CONTINUE


def _setcc(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.val = test_cc(ctxt.b, ctxt.eflags)
    return X86EMUL_CONTINUE


def _movzx(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.bytes = ctxt.op_bytes
    ctxt.dst.val = ctxt.src.val & (0xFF if ctxt.src.bytes == 1 else 0xFFFF)
    return X86EMUL_CONTINUE


def _movsx(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.bytes = ctxt.op_bytes
    n = 8 if ctxt.src.bytes == 1 else 16
    v = ctxt.src.val & ((1 << n) - 1)
    ctxt.dst.val = (v - (1 << n) if v >> (n - 1) else v) & U64
    return X86EMUL_CONTINUE


TWO_BYTE_SWITCH = {
    0x09: _wbinvd, 0x08: _nop, 0x0D: _nop, 0x18: _nop, 0x1F: _nop,
    0x20: _cr_read, 0x21: _dr_read,
    **{b: _cmov for b in range(0x40, 0x50)},
    **{b: _jcc for b in range(0x80, 0x90)},
    **{b: _setcc for b in range(0x90, 0xA0)},
    0xB6: _movzx, 0xB7: _movzx, 0xBE: _movsx, 0xBF: _movsx,
}

