"""Model of emulate.c's system executors and permission checks: segment registers,
descriptor tables, CR/DR/MSR access, CPUID/RDTSC/RDPMC, hypercalls, RSM, XSETBV, x87/FXSR.
"""

from __future__ import annotations

from .codes import (DR6_ACTIVE_LOW, DR6_BD, DR7_GD, DR_TRAP_BITS, EFER_SVME, MSR_EFER,
                    MSR_IA32_TSC, MSR_MISC_FEATURES_ENABLES,
                    MSR_MISC_FEATURES_ENABLES_CPUID_FAULT, MSR_TSC_AUX, OP_MEM, OP_NONE,
                    KVM_X86_SHADOW_INT_MOV_SS, VCPU_REGS_RAX, VCPU_REGS_RBX, VCPU_REGS_RCX,
                    VCPU_REGS_RDX, VCPU_SREG_CS, VCPU_SREG_GS, VCPU_SREG_SS, VCPU_SREG_LDTR,
                    VCPU_SREG_TR, X86_CR0_EM, X86_CR0_TS, X86_CR4_DE, X86_CR4_OSFXSR,
                    X86_CR4_OSXSAVE, X86_CR4_PCE, X86_CR4_TSD, X86_CR4_UMIP,
                    X86EMUL_CONTINUE, X86EMUL_F_DT_LOAD, X86EMUL_F_INVLPG,
                    X86EMUL_MODE_PROT64, X86EMUL_PROPAGATE_FAULT, X86EMUL_UNHANDLEABLE)
from .ctxt import X86EmulateCtxt, reg_read, reg_write
from .memaccess import (SegmentedAddress, __linearize, emulate_db, emulate_gp, emulate_nm,
                        emulate_ud, segmented_read_std, segmented_write_std, to_bytes)
from .ops import DescPtr
from .segments import (emulator_recalc_and_set_mode, get_msr, get_segment_selector,
                       load_segment_descriptor)


def _umip_blocks(ctxt: X86EmulateCtxt) -> bool:
    return bool(ctxt.ops.get_cr(ctxt, 4) & X86_CR4_UMIP) and ctxt.ops.cpl(ctxt) > 0


# --- segment registers ---------------------------------------------------------------
def em_store_sreg(ctxt: X86EmulateCtxt, segment: int) -> int:
    if segment > VCPU_SREG_GS and _umip_blocks(ctxt):
        return emulate_gp(ctxt, 0)
    ctxt.dst.val = get_segment_selector(ctxt, segment)
    if ctxt.dst.bytes == 4 and ctxt.dst.type == OP_MEM:
        ctxt.dst.bytes = 2
    return X86EMUL_CONTINUE


def em_mov_rm_sreg(ctxt: X86EmulateCtxt) -> int:
    if ctxt.modrm_reg > VCPU_SREG_GS:
        return emulate_ud(ctxt)
    return em_store_sreg(ctxt, ctxt.modrm_reg)


def em_mov_sreg_rm(ctxt: X86EmulateCtxt) -> int:
    if ctxt.modrm_reg == VCPU_SREG_CS or ctxt.modrm_reg > VCPU_SREG_GS:
        return emulate_ud(ctxt)
    if ctxt.modrm_reg == VCPU_SREG_SS:
        ctxt.interruptibility = KVM_X86_SHADOW_INT_MOV_SS
    ctxt.dst.type = OP_NONE
    return load_segment_descriptor(ctxt, ctxt.src.val & 0xFFFF, ctxt.modrm_reg)


def em_lseg(ctxt: X86EmulateCtxt) -> int:
    """LDS/LES/LSS/LFS/LGS: load the selector half, then the register half."""
    sel = (ctxt.src.val >> (ctxt.op_bytes * 8)) & 0xFFFF
    rc = load_segment_descriptor(ctxt, sel, ctxt.src2.val)
    if rc != X86EMUL_CONTINUE:
        return rc
    ctxt.dst.val = ctxt.src.val & ((1 << (ctxt.op_bytes * 8)) - 1)
    return rc


def em_sldt(ctxt: X86EmulateCtxt) -> int:
    return em_store_sreg(ctxt, VCPU_SREG_LDTR)


def em_str(ctxt: X86EmulateCtxt) -> int:
    return em_store_sreg(ctxt, VCPU_SREG_TR)


def em_lldt(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.type = OP_NONE
    return load_segment_descriptor(ctxt, ctxt.src.val & 0xFFFF, VCPU_SREG_LDTR)


def em_ltr(ctxt: X86EmulateCtxt) -> int:
    ctxt.dst.type = OP_NONE
    return load_segment_descriptor(ctxt, ctxt.src.val & 0xFFFF, VCPU_SREG_TR)


# --- descriptor tables -----------------------------------------------------------------
def emulate_store_desc_ptr(ctxt: X86EmulateCtxt, get) -> int:  # type: ignore[no-untyped-def]
    """SGDT/SIDT: 2-byte limit + 4 (24 bits used with o16) or 8 byte base."""
    if _umip_blocks(ctxt):
        return emulate_gp(ctxt, 0)
    if ctxt.mode == X86EMUL_MODE_PROT64:
        ctxt.op_bytes = 8
    dt = get(ctxt)
    address = dt.address
    if ctxt.op_bytes == 2:
        ctxt.op_bytes = 4
        address &= 0x00FFFFFF
    ctxt.dst.type = OP_NONE
    data = to_bytes(dt.size, 2) + to_bytes(address, ctxt.op_bytes)
    return segmented_write_std(ctxt, SegmentedAddress(ctxt.dst.ea, ctxt.dst.seg), data)


def em_sgdt(ctxt: X86EmulateCtxt) -> int:
    return emulate_store_desc_ptr(ctxt, ctxt.ops.get_gdt)


def em_sidt(ctxt: X86EmulateCtxt) -> int:
    return emulate_store_desc_ptr(ctxt, ctxt.ops.get_idt)


def read_descriptor(ctxt: X86EmulateCtxt, addr: SegmentedAddress,
                    op_bytes: int) -> tuple[int, DescPtr]:
    """Read limit (2 bytes) and base (3 bytes with o16, else op_bytes)."""
    if op_bytes == 2:
        op_bytes = 3
    rc, size = segmented_read_std(ctxt, addr, 2)
    if rc != X86EMUL_CONTINUE:
        return rc, DescPtr()
    rc, base = segmented_read_std(ctxt, SegmentedAddress(addr.ea + 2, addr.seg), op_bytes)
    return rc, DescPtr(int.from_bytes(size, "little"), int.from_bytes(base, "little"))


def em_lgdt_lidt(ctxt: X86EmulateCtxt, lgdt: bool) -> int:
    if ctxt.mode == X86EMUL_MODE_PROT64:
        ctxt.op_bytes = 8
    rc, dt = read_descriptor(ctxt, SegmentedAddress(ctxt.src.ea, ctxt.src.seg), ctxt.op_bytes)
    if rc != X86EMUL_CONTINUE:
        return rc
    if (ctxt.mode == X86EMUL_MODE_PROT64
            and not ctxt.ops.is_canonical_addr(ctxt, dt.address, X86EMUL_F_DT_LOAD)):
        return emulate_gp(ctxt, 0)
    (ctxt.ops.set_gdt if lgdt else ctxt.ops.set_idt)(ctxt, dt)
    ctxt.dst.type = OP_NONE
    return X86EMUL_CONTINUE


def em_lgdt(ctxt: X86EmulateCtxt) -> int:
    return em_lgdt_lidt(ctxt, True)


def em_lidt(ctxt: X86EmulateCtxt) -> int:
    return em_lgdt_lidt(ctxt, False)


# --- control and debug registers -------------------------------------------------------
def em_smsw(ctxt: X86EmulateCtxt) -> int:
    if _umip_blocks(ctxt):
        return emulate_gp(ctxt, 0)
    if ctxt.dst.type == OP_MEM:
        ctxt.dst.bytes = 2
    ctxt.dst.val = ctxt.ops.get_cr(ctxt, 0)
    return X86EMUL_CONTINUE


def em_lmsw(ctxt: X86EmulateCtxt) -> int:
    cr0 = ctxt.ops.get_cr(ctxt, 0)
    ctxt.ops.set_cr(ctxt, 0, (cr0 & ~0x0E) | (ctxt.src.val & 0x0F))
    ctxt.dst.type = OP_NONE
    return X86EMUL_CONTINUE


def em_clts(ctxt: X86EmulateCtxt) -> int:
    ctxt.ops.set_cr(ctxt, 0, ctxt.ops.get_cr(ctxt, 0) & ~X86_CR0_TS)
    return X86EMUL_CONTINUE


def em_cr_write(ctxt: X86EmulateCtxt) -> int:
    cr_num = ctxt.modrm_reg
    if ctxt.ops.set_cr(ctxt, cr_num, ctxt.src.val):
        return emulate_gp(ctxt, 0)
    ctxt.dst.type = OP_NONE
    if cr_num == 0:  # CR0.PE/PG may have changed the execution mode
        return emulator_recalc_and_set_mode(ctxt)
    return X86EMUL_CONTINUE


def em_dr_write(ctxt: X86EmulateCtxt) -> int:
    mask = 0xFFFFFFFFFFFFFFFF if ctxt.mode == X86EMUL_MODE_PROT64 else 0xFFFFFFFF
    if ctxt.ops.set_dr(ctxt, ctxt.modrm_reg, ctxt.src.val & mask) < 0:
        return emulate_gp(ctxt, 0)
    ctxt.dst.type = OP_NONE
    return X86EMUL_CONTINUE


def check_cr_access(ctxt: X86EmulateCtxt) -> int:
    if ctxt.modrm_reg not in (0, 2, 3, 4, 8):
        return emulate_ud(ctxt)
    return X86EMUL_CONTINUE


def check_dr_read(ctxt: X86EmulateCtxt) -> int:
    dr = ctxt.modrm_reg
    if dr > 7:
        return emulate_ud(ctxt)
    if ctxt.ops.get_cr(ctxt, 4) & X86_CR4_DE and dr in (4, 5):
        return emulate_ud(ctxt)
    if ctxt.ops.get_dr(ctxt, 7) & DR7_GD:
        dr6 = (ctxt.ops.get_dr(ctxt, 6) & ~DR_TRAP_BITS) | DR6_BD | DR6_ACTIVE_LOW
        ctxt.ops.set_dr(ctxt, 6, dr6)
        return emulate_db(ctxt)
    return X86EMUL_CONTINUE


def check_dr_write(ctxt: X86EmulateCtxt) -> int:
    if ctxt.modrm_reg in (6, 7) and ctxt.src.val & 0xFFFFFFFF00000000:
        return emulate_gp(ctxt, 0)
    return check_dr_read(ctxt)


# --- MSRs, counters, CPUID ------------------------------------------------------------
def em_wrmsr(ctxt: X86EmulateCtxt) -> int:
    data = (reg_read(ctxt, VCPU_REGS_RAX) & 0xFFFFFFFF) | (reg_read(ctxt, VCPU_REGS_RDX) << 32)
    r = ctxt.ops.set_msr_with_filter(ctxt, reg_read(ctxt, VCPU_REGS_RCX),
                                     data & 0xFFFFFFFFFFFFFFFF)
    return emulate_gp(ctxt, 0) if r == X86EMUL_PROPAGATE_FAULT else r


def em_rdmsr(ctxt: X86EmulateCtxt) -> int:
    r, data = ctxt.ops.get_msr_with_filter(ctxt, reg_read(ctxt, VCPU_REGS_RCX))
    if r == X86EMUL_PROPAGATE_FAULT:
        return emulate_gp(ctxt, 0)
    if r == X86EMUL_CONTINUE:
        reg_write(ctxt, VCPU_REGS_RAX, data & 0xFFFFFFFF)
        reg_write(ctxt, VCPU_REGS_RDX, (data >> 32) & 0xFFFFFFFF)
    return r


def em_rdtsc(ctxt: X86EmulateCtxt) -> int:
    tsc = get_msr(ctxt, MSR_IA32_TSC)
    reg_write(ctxt, VCPU_REGS_RAX, tsc & 0xFFFFFFFF)
    reg_write(ctxt, VCPU_REGS_RDX, (tsc >> 32) & 0xFFFFFFFF)
    return X86EMUL_CONTINUE


def em_rdpmc(ctxt: X86EmulateCtxt) -> int:
    err, pmc = ctxt.ops.read_pmc(ctxt, reg_read(ctxt, VCPU_REGS_RCX))
    if err:
        return emulate_gp(ctxt, 0)
    reg_write(ctxt, VCPU_REGS_RAX, pmc & 0xFFFFFFFF)
    reg_write(ctxt, VCPU_REGS_RDX, (pmc >> 32) & 0xFFFFFFFF)
    return X86EMUL_CONTINUE


def em_rdpid(ctxt: X86EmulateCtxt) -> int:
    if not ctxt.ops.guest_has_rdpid(ctxt):
        return emulate_ud(ctxt)
    ctxt.dst.val = get_msr(ctxt, MSR_TSC_AUX)
    return X86EMUL_CONTINUE


def em_cpuid(ctxt: X86EmulateCtxt) -> int:
    misc = get_msr(ctxt, MSR_MISC_FEATURES_ENABLES)
    if misc & MSR_MISC_FEATURES_ENABLES_CPUID_FAULT and ctxt.ops.cpl(ctxt):
        return emulate_gp(ctxt, 0)
    eax, ebx, ecx, edx = ctxt.ops.get_cpuid(ctxt, reg_read(ctxt, VCPU_REGS_RAX) & 0xFFFFFFFF,
                                            reg_read(ctxt, VCPU_REGS_RCX) & 0xFFFFFFFF, False)
    for reg, val in ((VCPU_REGS_RAX, eax), (VCPU_REGS_RBX, ebx), (VCPU_REGS_RCX, ecx),
                     (VCPU_REGS_RDX, edx)):
        reg_write(ctxt, reg, val & 0xFFFFFFFF)
    return X86EMUL_CONTINUE


def check_rdtsc(ctxt: X86EmulateCtxt) -> int:
    if ctxt.ops.get_cr(ctxt, 4) & X86_CR4_TSD and ctxt.ops.cpl(ctxt):
        return emulate_gp(ctxt, 0)
    return X86EMUL_CONTINUE


def check_rdpmc(ctxt: X86EmulateCtxt) -> int:
    rcx = reg_read(ctxt, VCPU_REGS_RCX)
    if ctxt.features.enable_vmware_backdoor and rcx in (0x10000, 0x10001, 0x10002):
        return X86EMUL_CONTINUE  # VMware pseudo-PMCs
    cr4 = ctxt.ops.get_cr(ctxt, 4)
    if (not cr4 & X86_CR4_PCE and ctxt.ops.cpl(ctxt)) or ctxt.ops.check_rdpmc_early(ctxt, rcx):
        return emulate_gp(ctxt, 0)
    return X86EMUL_CONTINUE


def check_svme(ctxt: X86EmulateCtxt) -> int:
    if not get_msr(ctxt, MSR_EFER) & EFER_SVME:
        return emulate_ud(ctxt)
    return X86EMUL_CONTINUE


def check_svme_pa(ctxt: X86EmulateCtxt) -> int:
    if reg_read(ctxt, VCPU_REGS_RAX) & 0xFFFF000000000000:
        return emulate_gp(ctxt, 0)
    return check_svme(ctxt)


# --- misc system ---------------------------------------------------------------------
def em_invlpg(ctxt: X86EmulateCtxt) -> int:
    rc, linear, _ = __linearize(ctxt, SegmentedAddress(ctxt.src.ea, ctxt.src.seg), 1,
                                ctxt.mode, X86EMUL_F_INVLPG)
    if rc == X86EMUL_CONTINUE:
        ctxt.ops.invlpg(ctxt, linear)
    ctxt.dst.type = OP_NONE
    return X86EMUL_CONTINUE


def em_hypercall(ctxt: X86EmulateCtxt) -> int:
    """VMCALL/VMMCALL: patch in the vendor's instruction and let the guest re-execute it."""
    rc = ctxt.ops.fix_hypercall(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    ctxt._eip = ctxt.eip
    ctxt.dst.type = OP_NONE
    return X86EMUL_CONTINUE


def em_xsetbv(ctxt: X86EmulateCtxt) -> int:
    if not ctxt.ops.get_cr(ctxt, 4) & X86_CR4_OSXSAVE:
        return emulate_ud(ctxt)
    xcr = ((reg_read(ctxt, VCPU_REGS_RDX) & 0xFFFFFFFF) << 32) | (
        reg_read(ctxt, VCPU_REGS_RAX) & 0xFFFFFFFF)
    if ctxt.ops.set_xcr(ctxt, reg_read(ctxt, VCPU_REGS_RCX) & 0xFFFFFFFF, xcr):
        return emulate_gp(ctxt, 0)
    return X86EMUL_CONTINUE


def em_rsm(ctxt: X86EmulateCtxt) -> int:
    if not ctxt.ops.is_smm(ctxt):
        return emulate_ud(ctxt)
    if ctxt.ops.leave_smm(ctxt):
        ctxt.ops.triple_fault(ctxt)
    return emulator_recalc_and_set_mode(ctxt)


def em_clflush(ctxt: X86EmulateCtxt) -> int:
    return X86EMUL_CONTINUE  # emulated regardless of CPUID, as upstream


def em_clflushopt(ctxt: X86EmulateCtxt) -> int:
    return X86EMUL_CONTINUE


# --- x87 / FXSR ------------------------------------------------------------------------
def _fpu_unavailable(ctxt: X86EmulateCtxt) -> bool:
    return bool(ctxt.ops.get_cr(ctxt, 0) & (X86_CR0_TS | X86_CR0_EM))


def em_fninit(ctxt: X86EmulateCtxt) -> int:
    if _fpu_unavailable(ctxt):
        return emulate_nm(ctxt)
    ctxt.ops.fpu_fninit(ctxt)
    return X86EMUL_CONTINUE


def em_fnstcw(ctxt: X86EmulateCtxt) -> int:
    if _fpu_unavailable(ctxt):
        return emulate_nm(ctxt)
    ctxt.dst.val = ctxt.ops.fpu_fnstcw(ctxt)
    return X86EMUL_CONTINUE


def em_fnstsw(ctxt: X86EmulateCtxt) -> int:
    if _fpu_unavailable(ctxt):
        return emulate_nm(ctxt)
    ctxt.dst.val = ctxt.ops.fpu_fnstsw(ctxt)
    return X86EMUL_CONTINUE


def check_fxsr(ctxt: X86EmulateCtxt) -> int:
    if not ctxt.ops.guest_has_fxsr(ctxt):
        return emulate_ud(ctxt)
    if _fpu_unavailable(ctxt):
        return emulate_nm(ctxt)
    if ctxt.mode >= X86EMUL_MODE_PROT64:
        return X86EMUL_UNHANDLEABLE  # FXSAVE64 forms are not emulated
    return X86EMUL_CONTINUE


FXSTATE_XMM_OFFSET = 160  # offsetof(struct fxregs_state, xmm_space[0])


def fxstate_size(ctxt: X86EmulateCtxt) -> int:
    """XMM0-7 are saved only with CR4.OSFXSR (all 16 in 64-bit mode)."""
    if ctxt.mode == X86EMUL_MODE_PROT64:
        return FXSTATE_XMM_OFFSET + 16 * 16
    return FXSTATE_XMM_OFFSET + (8 if ctxt.ops.get_cr(ctxt, 4) & X86_CR4_OSFXSR else 0) * 16


def em_fxsave(ctxt: X86EmulateCtxt) -> int:
    rc = check_fxsr(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    image = ctxt.ops.fpu_fxsave(ctxt)
    return segmented_write_std(ctxt, SegmentedAddress(ctxt.memop.ea, ctxt.memop.seg),
                               image[:fxstate_size(ctxt)])


def em_fxrstor(ctxt: X86EmulateCtxt) -> int:
    rc = check_fxsr(ctxt)
    if rc != X86EMUL_CONTINUE:
        return rc
    size = fxstate_size(ctxt)
    rc, image = segmented_read_std(ctxt, SegmentedAddress(ctxt.memop.ea, ctxt.memop.seg), size)
    if rc != X86EMUL_CONTINUE:
        return rc
    if size < 512:  # keep the registers the guest image does not cover
        image = image + ctxt.ops.fpu_fxsave(ctxt)[size:]
    if int.from_bytes(image[24:28], "little") >> 16:  # MXCSR reserved bits
        return emulate_gp(ctxt, 0)
    return ctxt.ops.fpu_fxrstor(ctxt, image)


