"""Model of emulate.c's control-transfer executors: near/far call, jmp, ret, loop, jcxz,
int/iret (real mode only, as upstream), syscall/sysenter/sysexit.
"""

from __future__ import annotations

from .codes import (EFER_LMA, EFER_SCE, MSR_CSTAR, MSR_EFER, MSR_IA32_SYSENTER_CS,
                    MSR_IA32_SYSENTER_EIP, MSR_IA32_SYSENTER_ESP, MSR_LSTAR, MSR_STAR,
                    MSR_SYSCALL_MASK, VCPU_REGS_R11, VCPU_REGS_RCX, VCPU_REGS_RDX,
                    VCPU_REGS_RSP, VCPU_SREG_CS, VCPU_SREG_SS, X86_EFLAGS_AC, X86_EFLAGS_AF,
                    X86_EFLAGS_CF, X86_EFLAGS_DF, X86_EFLAGS_FIXED, X86_EFLAGS_ID,
                    X86_EFLAGS_IF, X86_EFLAGS_IOPL, X86_EFLAGS_NT, X86_EFLAGS_OF,
                    X86_EFLAGS_PF, X86_EFLAGS_RF, X86_EFLAGS_SF, X86_EFLAGS_TF,
                    X86_EFLAGS_VIF, X86_EFLAGS_VIP, X86_EFLAGS_VM, X86_EFLAGS_ZF,
                    EFLG_RESERVED_ZEROS_MASK, X86EMUL_CONTINUE, X86EMUL_MODE_PROT32,
                    X86EMUL_MODE_PROT64, X86EMUL_MODE_REAL, X86EMUL_MODE_VM86,
                    X86EMUL_UNHANDLEABLE)
from .ctxt import X86EmulateCtxt, reg_read, reg_write
from .em_basic import em_push
from .fastop import test_cc
from .memaccess import (U64, address_mask, emulate_gp, emulate_pop, emulate_ud,
                        linear_read_system, register_address_increment, rsp_increment)
from .ops import DescStruct
from .segments import (CALL_JMP, RET, __load_segment_descriptor, assign_eip_far,
                       assign_eip_near, get_msr, get_segment_selector, jmp_rel,
                       load_segment_descriptor)


def _far_selector(ctxt: X86EmulateCtxt) -> int:
    """The selector that follows the offset in a far pointer operand."""
    return (ctxt.src.val >> (ctxt.op_bytes * 8)) & 0xFFFF


def em_call(ctxt: X86EmulateCtxt) -> int:
    rel = ctxt.src.val
    ctxt.src.val = ctxt._eip
    rc = jmp_rel(ctxt, rel)
    if rc != X86EMUL_CONTINUE:
        return rc
    return em_push(ctxt)


def em_call_near_abs(ctxt: X86EmulateCtxt) -> int:
    old_eip = ctxt._eip
    rc = assign_eip_near(ctxt, ctxt.src.val)
    if rc != X86EMUL_CONTINUE:
        return rc
    ctxt.src.val = old_eip
    return em_push(ctxt)


def em_jmp_abs(ctxt: X86EmulateCtxt) -> int:
    return assign_eip_near(ctxt, ctxt.src.val)


def em_jmp_far(ctxt: X86EmulateCtxt) -> int:
    cpl = ctxt.ops.cpl(ctxt)
    rc, _ = __load_segment_descriptor(ctxt, _far_selector(ctxt), VCPU_SREG_CS, cpl, CALL_JMP)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc = assign_eip_far(ctxt, ctxt.src.val & U64)
    return X86EMUL_UNHANDLEABLE if rc != X86EMUL_CONTINUE else rc  # no error recovery


def em_call_far(ctxt: X86EmulateCtxt) -> int:
    ops = ctxt.ops
    cpl, prev_mode, old_eip = ops.cpl(ctxt), ctxt.mode, ctxt._eip
    old = ops.get_segment(ctxt, VCPU_SREG_CS)
    old_cs, old_desc = (old[0], old[1]) if old is not None else (0, DescStruct())
    target = ctxt.src.val & U64
    rc, _ = __load_segment_descriptor(ctxt, _far_selector(ctxt), VCPU_SREG_CS, cpl, CALL_JMP)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc = assign_eip_far(ctxt, target)
    if rc == X86EMUL_CONTINUE:
        ctxt.src.val = old_cs
        rc = em_push(ctxt)
        if rc == X86EMUL_CONTINUE:
            ctxt.src.val = old_eip
            rc = em_push(ctxt)
            if rc == X86EMUL_CONTINUE:
                return rc
    ops.set_segment(ctxt, old_cs, old_desc, 0, VCPU_SREG_CS)  # at least restore CS
    ctxt.mode = prev_mode
    return rc


def em_ret(ctxt: X86EmulateCtxt) -> int:
    rc, eip = emulate_pop(ctxt, ctxt.op_bytes)
    if rc != X86EMUL_CONTINUE:
        return rc
    return assign_eip_near(ctxt, eip)


def em_ret_near_imm(ctxt: X86EmulateCtxt) -> int:
    rc = em_ret(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    rsp_increment(ctxt, ctxt.src.val)
    return X86EMUL_CONTINUE


def em_ret_far(ctxt: X86EmulateCtxt) -> int:
    cpl = ctxt.ops.cpl(ctxt)
    rc, eip = emulate_pop(ctxt, ctxt.op_bytes)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc, cs = emulate_pop(ctxt, ctxt.op_bytes)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc, _ = __load_segment_descriptor(ctxt, cs & 0xFFFF, VCPU_SREG_CS, cpl, RET)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc = assign_eip_far(ctxt, eip)
    return X86EMUL_UNHANDLEABLE if rc != X86EMUL_CONTINUE else rc


def em_ret_far_imm(ctxt: X86EmulateCtxt) -> int:
    rc = em_ret_far(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    rsp_increment(ctxt, ctxt.src.val)
    return X86EMUL_CONTINUE


def em_loop(ctxt: X86EmulateCtxt) -> int:
    """LOOP/LOOPE/LOOPNE: E2 ignores ZF; E0/E1 test it (condition b ^ 5)."""
    register_address_increment(ctxt, VCPU_REGS_RCX, -1)
    if (address_mask(ctxt, reg_read(ctxt, VCPU_REGS_RCX)) != 0
            and (ctxt.b == 0xE2 or test_cc(ctxt.b ^ 0x5, ctxt.eflags))):
        return jmp_rel(ctxt, ctxt.src.val)
    return X86EMUL_CONTINUE


def em_jcxz(ctxt: X86EmulateCtxt) -> int:
    if address_mask(ctxt, reg_read(ctxt, VCPU_REGS_RCX)) == 0:
        return jmp_rel(ctxt, ctxt.src.val)
    return X86EMUL_CONTINUE


# --- software interrupts ---------------------------------------------------------------
def __emulate_int_real(ctxt: X86EmulateCtxt, irq: int) -> int:
    """Real-mode INT: push FLAGS/CS/IP, load CS:IP from the IVT."""
    ctxt.src.val = ctxt.eflags
    rc = em_push(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    ctxt.eflags &= ~(X86_EFLAGS_IF | X86_EFLAGS_TF | X86_EFLAGS_AC)
    ctxt.src.val = get_segment_selector(ctxt, VCPU_SREG_CS)
    rc = em_push(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    ctxt.src.val = ctxt._eip
    rc = em_push(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    dt = ctxt.ops.get_idt(ctxt)
    rc, cs = linear_read_system(ctxt, dt.address + (irq << 2) + 2, 2)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc, eip = linear_read_system(ctxt, dt.address + (irq << 2), 2)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc = load_segment_descriptor(ctxt, int.from_bytes(cs, "little"), VCPU_SREG_CS)
    if rc != X86EMUL_CONTINUE:
        return rc
    ctxt._eip = int.from_bytes(eip, "little")
    return rc


def emulate_int(ctxt: X86EmulateCtxt, irq: int) -> int:
    """Only real mode is implemented upstream; protected-mode INT is UNHANDLEABLE."""
    if ctxt.mode == X86EMUL_MODE_REAL:
        return __emulate_int_real(ctxt, irq)
    return X86EMUL_UNHANDLEABLE


def emulate_iret_real(ctxt: X86EmulateCtxt) -> int:
    mask = (X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | X86_EFLAGS_SF
            | X86_EFLAGS_TF | X86_EFLAGS_IF | X86_EFLAGS_DF | X86_EFLAGS_OF
            | X86_EFLAGS_IOPL | X86_EFLAGS_NT | X86_EFLAGS_RF | X86_EFLAGS_AC
            | X86_EFLAGS_ID | X86_EFLAGS_FIXED)
    vm86_mask = X86_EFLAGS_VM | X86_EFLAGS_VIF | X86_EFLAGS_VIP
    rc, temp_eip = emulate_pop(ctxt, ctxt.op_bytes)
    if rc != X86EMUL_CONTINUE:
        return rc
    if temp_eip & ~0xFFFF:
        return emulate_gp(ctxt, 0)
    rc, cs = emulate_pop(ctxt, ctxt.op_bytes)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc, temp_eflags = emulate_pop(ctxt, ctxt.op_bytes)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc = load_segment_descriptor(ctxt, cs & 0xFFFF, VCPU_SREG_CS)
    if rc != X86EMUL_CONTINUE:
        return rc
    ctxt._eip = temp_eip
    if ctxt.op_bytes == 4:
        ctxt.eflags = (temp_eflags & mask) | (ctxt.eflags & vm86_mask)
    elif ctxt.op_bytes == 2:
        ctxt.eflags = (ctxt.eflags & ~0xFFFF) | temp_eflags
    ctxt.eflags &= ~EFLG_RESERVED_ZEROS_MASK
    ctxt.eflags |= X86_EFLAGS_FIXED
    ctxt.ops.set_nmi_mask(ctxt, False)
    return rc


def em_iret(ctxt: X86EmulateCtxt) -> int:
    if ctxt.mode == X86EMUL_MODE_REAL:
        return emulate_iret_real(ctxt)
    return X86EMUL_UNHANDLEABLE  # protected-mode IRET is not implemented upstream


# --- fast system calls ---------------------------------------------------------------
def setup_syscalls_segments() -> tuple[DescStruct, DescStruct]:
    """Flat 4G CS (code, DPL 0) and SS (data) caches, adjusted by the callers."""
    cs = DescStruct(base=0, limit=0xFFFFF, type=0x0B, s=1, dpl=0, p=1, d=1, g=1, l=0)
    ss = DescStruct(base=0, limit=0xFFFFF, type=0x03, s=1, dpl=0, p=1, d=1, g=1, l=0)
    return cs, ss


def em_syscall(ctxt: X86EmulateCtxt) -> int:
    ops = ctxt.ops
    if ctxt.mode in (X86EMUL_MODE_REAL, X86EMUL_MODE_VM86):
        return emulate_ud(ctxt)
    if ctxt.mode != X86EMUL_MODE_PROT64 and ops.guest_cpuid_is_intel_compatible(ctxt):
        return emulate_ud(ctxt)
    efer = get_msr(ctxt, MSR_EFER)
    if not efer & EFER_SCE:
        return emulate_ud(ctxt)
    cs, ss = setup_syscalls_segments()
    star = get_msr(ctxt, MSR_STAR) >> 32
    cs_sel, ss_sel = star & 0xFFFC, (star + 8) & 0xFFFF
    if efer & EFER_LMA:
        cs.d, cs.l = 0, 1
    ops.set_segment(ctxt, cs_sel, cs, 0, VCPU_SREG_CS)
    ops.set_segment(ctxt, ss_sel, ss, 0, VCPU_SREG_SS)
    reg_write(ctxt, VCPU_REGS_RCX, ctxt._eip)
    if efer & EFER_LMA:
        reg_write(ctxt, VCPU_REGS_R11, ctxt.eflags)
        ctxt._eip = get_msr(ctxt, MSR_LSTAR if ctxt.mode == X86EMUL_MODE_PROT64 else MSR_CSTAR)
        ctxt.eflags &= ~get_msr(ctxt, MSR_SYSCALL_MASK)
        ctxt.eflags |= X86_EFLAGS_FIXED
    else:
        ctxt._eip = get_msr(ctxt, MSR_STAR) & 0xFFFFFFFF
        ctxt.eflags &= ~(X86_EFLAGS_VM | X86_EFLAGS_IF)
    ctxt.tf = bool(ctxt.eflags & X86_EFLAGS_TF)
    return X86EMUL_CONTINUE


def em_sysenter(ctxt: X86EmulateCtxt) -> int:
    ops = ctxt.ops
    efer = get_msr(ctxt, MSR_EFER)
    if ctxt.mode == X86EMUL_MODE_REAL:
        return emulate_gp(ctxt, 0)
    if (ctxt.mode != X86EMUL_MODE_PROT64 and efer & EFER_LMA
            and not ops.guest_cpuid_is_intel_compatible(ctxt)):
        return emulate_ud(ctxt)
    if ctxt.mode == X86EMUL_MODE_PROT64:
        return X86EMUL_UNHANDLEABLE  # not tested in 64-bit mode upstream
    msr = get_msr(ctxt, MSR_IA32_SYSENTER_CS)
    if (msr & 0xFFFC) == 0:
        return emulate_gp(ctxt, 0)
    cs, ss = setup_syscalls_segments()
    ctxt.eflags &= ~(X86_EFLAGS_VM | X86_EFLAGS_IF)
    cs_sel = msr & 0xFFFC
    if efer & EFER_LMA:
        cs.d, cs.l = 0, 1
    ops.set_segment(ctxt, cs_sel, cs, 0, VCPU_SREG_CS)
    ops.set_segment(ctxt, cs_sel + 8, ss, 0, VCPU_SREG_SS)
    eip, esp = get_msr(ctxt, MSR_IA32_SYSENTER_EIP), get_msr(ctxt, MSR_IA32_SYSENTER_ESP)
    ctxt._eip = eip if efer & EFER_LMA else eip & 0xFFFFFFFF
    reg_write(ctxt, VCPU_REGS_RSP, esp if efer & EFER_LMA else esp & 0xFFFFFFFF)
    if efer & EFER_LMA:
        ctxt.mode = X86EMUL_MODE_PROT64
    return X86EMUL_CONTINUE


def em_sysexit(ctxt: X86EmulateCtxt) -> int:
    ops = ctxt.ops
    if ctxt.mode in (X86EMUL_MODE_REAL, X86EMUL_MODE_VM86):
        return emulate_gp(ctxt, 0)
    cs, ss = setup_syscalls_segments()
    usermode = X86EMUL_MODE_PROT64 if ctxt.rex_prefix & 8 else X86EMUL_MODE_PROT32
    rcx, rdx = reg_read(ctxt, VCPU_REGS_RCX), reg_read(ctxt, VCPU_REGS_RDX)
    cs.dpl = ss.dpl = 3
    msr = get_msr(ctxt, MSR_IA32_SYSENTER_CS)
    if usermode == X86EMUL_MODE_PROT32:
        cs_sel = (msr + 16) & 0xFFFF
        if (msr & 0xFFFC) == 0:
            return emulate_gp(ctxt, 0)
        ss_sel = (msr + 24) & 0xFFFF
        rcx, rdx = rcx & 0xFFFFFFFF, rdx & 0xFFFFFFFF
    else:
        cs_sel = (msr + 32) & 0xFFFF
        if msr == 0:
            return emulate_gp(ctxt, 0)
        ss_sel = cs_sel + 8
        cs.d, cs.l = 0, 1
        if not (ops.is_canonical_addr(ctxt, rcx, 0) and ops.is_canonical_addr(ctxt, rdx, 0)):
            return emulate_gp(ctxt, 0)
    ops.set_segment(ctxt, cs_sel | 3, cs, 0, VCPU_SREG_CS)
    ops.set_segment(ctxt, ss_sel | 3, ss, 0, VCPU_SREG_SS)
    ctxt._eip = rdx
    ctxt.mode = usermode
    reg_write(ctxt, VCPU_REGS_RSP, rcx)
    return X86EMUL_CONTINUE
