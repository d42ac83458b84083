"""Model of emulate.c's decoder: x86_decode_insn, decode_modrm, decode_abs, decode_operand.

Steps (reference §9.6): 1 fetch; 2 default sizes by mode; 3 legacy prefixes and REX;
4 opcode map; 5 ModRM and the VEX rejection; 6 group resolution; 7 is_branch, CET;
8 TRAP_UD rule; 9 rare flags (NotImpl, 64-bit stack/branch sizes, Op3264, No16, Sse/Mmx);
10 ModRM/SIB or moffs; 11 operands src, src2, dst and the RIP-relative fix-up.
"""

from __future__ import annotations

from .codes import (CET_ENDBR_EN, CET_SHSTK_EN, EMULATION_FAILED, EMULATION_OK,
                    EMULTYPE_TRAP_UD, MSR_IA32_S_CET, MSR_IA32_U_CET, OP_IMM, OP_MEM, OP_MM,
                    OP_NONE, OP_REG, OP_XMM, VCPU_REGS_RAX, VCPU_REGS_RBP,
                    VCPU_REGS_RBX, VCPU_REGS_RCX, VCPU_REGS_RDI, VCPU_REGS_RDX,
                    VCPU_REGS_RSI, VCPU_REGS_RSP, VCPU_SREG_CS, VCPU_SREG_DS, VCPU_SREG_ES,
                    VCPU_SREG_FS, VCPU_SREG_GS, VCPU_SREG_SS, X86_CR4_CET, X86EMUL_CONTINUE,
                    X86EMUL_MODE_PROT16, X86EMUL_MODE_PROT32,
                    X86EMUL_MODE_PROT64, X86EMUL_MODE_REAL, X86EMUL_MODE_VM86,
                    X86EMUL_PROPAGATE_FAULT)
from .ctxt import Operand, X86EmulateCtxt, fetch_register_operand, reg_read
from .flags import (BitOp, ByteOp, IncSP, CheckPerm, DstShift, Escape, Group, GroupDual, GroupMask,
                    InstrDual, OpImplicit, Intercept, IsBranch, MemAbs, Mmx, ModeDual, ModRM, NearBranch,
                    No16, NoMod, NotImpl, Op3264, OpAcc, OpAccHi, OpAccLo, OpCL, OpCS, OpDI,
                    OpDS, OpDX, OpES, OpFS, OpGS, OpImm, OpImm64, OpImmByte, OpImmFAddr,
                    OpImmU, OpImmU16, OpImmUByte, OpMask, OpMem, OpMem8, OpMem16, OpMem32,
                    OpMem64, OpMemFAddr, OpOne, OpReg, OpSI, OpSS, OpXLat, Prefix, RMExt,
                    ShadowStack, Src2Shift, SrcMask, SrcMem,
                    SrcMem16, SrcMem32, SrcReg, SrcShift, Sse, Stack, EmulateOnUD)
from kvmsim.probe import kfunc

from .decode_cache import ENABLED as _CACHE_ON
from .decode_cache import decode_cache
from .fetch import FetchFailed, __do_insn_fetch_bytes, insn_fetch
from .memaccess import address_mask
from .tables import opcode_map_0f_38, opcode_table, twobyte_table
from .vex import decode_vex

U64 = 0xFFFFFFFFFFFFFFFF
_SEG_PREFIX = {0x26: VCPU_SREG_ES, 0x2E: VCPU_SREG_CS, 0x36: VCPU_SREG_SS,
               0x3E: VCPU_SREG_DS, 0x64: VCPU_SREG_FS, 0x65: VCPU_SREG_GS}
_SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: U64}
_SREG_OP = {OpES: VCPU_SREG_ES, OpCS: VCPU_SREG_CS, OpSS: VCPU_SREG_SS, OpDS: VCPU_SREG_DS,
            OpFS: VCPU_SREG_FS, OpGS: VCPU_SREG_GS}
_RARE = NotImpl | Stack | Op3264 | Sse | Mmx | Intercept | CheckPerm | NearBranch | No16
_VEC = Sse | Mmx
_CET_RELEVANT = IsBranch | ShadowStack  # is_ibt_instruction needs IsBranch
_EMULTYPE_TRAP_UD = int(EMULTYPE_TRAP_UD)  # plain int: IntFlag `&` runs Python code
# Legacy-prefix classes by byte (0 = not a prefix), for the step-3 loop.
_PFX_OP, _PFX_AD, _PFX_SEG, _PFX_REX, _PFX_LOCK, _PFX_REP = 1, 2, 3, 4, 5, 6
_PREFIX_KIND = tuple(
    _PFX_OP if b == 0x66 else _PFX_AD if b == 0x67 else _PFX_SEG if b in _SEG_PREFIX
    else _PFX_REX if 0x40 <= b <= 0x4F else _PFX_LOCK if b == 0xF0
    else _PFX_REP if b in (0xF2, 0xF3) else 0 for b in range(256))


# --- operands --------------------------------------------------------------------------
def decode_register(ctxt: X86EmulateCtxt, op: Operand, reg: int, byteop: bool) -> None:
    """Point op at a GPR; without REX, byte registers 4-7 are AH/CH/DH/BH."""
    if byteop and ctxt.rex_prefix == 0 and 4 <= reg < 8:
        op.reg, op.reg_shift = reg & 3, 8
    else:
        op.reg, op.reg_shift = reg, 0


def _vec_reg(ctxt: X86EmulateCtxt, op: Operand, reg: int) -> None:
    op.type, op.xmm = OP_XMM, reg
    if ctxt.vex:
        op.bytes = 32 if ctxt.vex_l else 16
        op.val = int.from_bytes(ctxt.ops.read_avx_reg(ctxt, reg)[:op.bytes], "little")
    else:
        op.bytes = 16
        op.val = int.from_bytes(ctxt.ops.read_sse_reg(ctxt, reg), "little")


def decode_register_operand(ctxt: X86EmulateCtxt, op: Operand) -> None:
    d = ctxt.d
    reg = ctxt.modrm_reg if d & ModRM else (ctxt.b & 7) | ((ctxt.rex_prefix & 1) << 3)
    if d & _VEC:
        if d & Sse:
            _vec_reg(ctxt, op, reg)
            return
        op.type, op.bytes, op.mm = OP_MM, 8, reg & 7
        return
    op.type = OP_REG
    # decode_register + fetch_register_operand, inlined
    if d & ByteOp:
        op.bytes = 1
        mask = 0xFF
        if ctxt.rex_prefix == 0 and 4 <= reg < 8:
            reg &= 3
            shift = 8
        else:
            shift = 0
    else:
        op.bytes = nbytes = ctxt.op_bytes
        mask = _SIZE_MASK[nbytes]
        shift = 0
    op.reg = reg
    op.reg_shift = shift
    op.val = op.orig_val = (reg_read(ctxt, reg) >> shift) & mask


def decode_modrm(ctxt: X86EmulateCtxt, op: Operand) -> None:
    """ModRM/SIB/displacement in 16-bit or 32/64-bit addressing (RIP-relative in 64)."""
    rex = ctxt.rex_prefix
    d = ctxt.d
    base_reg = (rex << 3) & 8
    modrm = ctxt.modrm
    ctxt.modrm_mod = mod = modrm >> 6
    ctxt.modrm_reg = ((rex << 1) & 8) | ((modrm >> 3) & 7)
    ctxt.modrm_rm = rm = base_reg | (modrm & 7)
    ctxt.modrm_seg = VCPU_SREG_DS
    if mod == 3 or d & NoMod:
        op.type = OP_REG
        # decode_register, inlined
        if d & ByteOp:
            op.bytes = 1
            if rex == 0 and 4 <= rm < 8:
                op.reg, op.reg_shift = rm & 3, 8
            else:
                op.reg, op.reg_shift = rm, 0
        else:
            op.bytes = ctxt.op_bytes
            op.reg, op.reg_shift = rm, 0
        if d & _VEC:
            if d & Sse:
                _vec_reg(ctxt, op, rm)
                return
            op.type, op.bytes, op.mm = OP_MM, 8, rm & 7
            return
        fetch_register_operand(ctxt, op)
        return
    op.type = OP_MEM
    ad_bytes = ctxt.ad_bytes
    if ad_bytes == 2:
        ea = 0
        bx, bp = reg_read(ctxt, VCPU_REGS_RBX) & 0xFFFF, reg_read(ctxt, VCPU_REGS_RBP) & 0xFFFF
        si, di = reg_read(ctxt, VCPU_REGS_RSI) & 0xFFFF, reg_read(ctxt, VCPU_REGS_RDI) & 0xFFFF
        if mod == 0:
            if rm == 6:
                ea += insn_fetch(ctxt, 2)
        elif mod == 1:
            ea += insn_fetch(ctxt, 1, True)
        else:
            ea += insn_fetch(ctxt, 2)
        ea += (bx + si, bx + di, bp + si, bp + di, si, di, bp if mod else 0, bx)[rm]
        if rm in (2, 3) or (rm == 6 and mod != 0):
            ctxt.modrm_seg = VCPU_SREG_SS
        ea &= 0xFFFF
    else:
        rm7 = rm & 7
        if rm7 == 4:
            index_reg = (rex << 2) & 8
            sib = insn_fetch(ctxt, 1)
            index_reg |= (sib >> 3) & 7
            base_reg |= sib & 7
            scale = sib >> 6
            if base_reg & 7 == 5 and mod == 0:
                ea = insn_fetch(ctxt, 4, True)
            else:
                ea = (ctxt._regs[base_reg] if ctxt.regs_valid >> base_reg & 1
                      else reg_read(ctxt, base_reg))
                if base_reg == VCPU_REGS_RSP or base_reg == VCPU_REGS_RBP:
                    ctxt.modrm_seg = VCPU_SREG_SS
                if d & IncSP and base_reg == VCPU_REGS_RSP:
                    ea += ctxt.op_bytes  # POP [rSP] addresses after the increment
            if index_reg != 4:
                ea += reg_read(ctxt, index_reg) << scale
        elif rm7 == 5 and mod == 0:
            ea = insn_fetch(ctxt, 4, True)
            if ctxt.mode == X86EMUL_MODE_PROT64:
                ctxt.rip_relative = True
        else:
            ea = reg_read(ctxt, rm)
            if rm == VCPU_REGS_RSP or rm == VCPU_REGS_RBP:
                ctxt.modrm_seg = VCPU_SREG_SS
        if mod == 1:
            ea += insn_fetch(ctxt, 1, True)
        elif mod == 2:
            ea += insn_fetch(ctxt, 4, True)
    op.ea = ea & U64 if ad_bytes == 8 else ea & 0xFFFFFFFF


def decode_abs(ctxt: X86EmulateCtxt, op: Operand) -> None:
    """moffs: an absolute address of ad_bytes."""
    op.type = OP_MEM
    op.ea = insn_fetch(ctxt, ctxt.ad_bytes)


def fetch_bit_operand(ctxt: X86EmulateCtxt) -> None:
    """BT* with a register bit offset and memory operand: move ea by the offset's bytes."""
    dst, src = ctxt.dst, ctxt.src
    if dst.type == OP_MEM and src.type == OP_REG:
        bits = dst.bytes * 8
        sv = src.val & _SIZE_MASK[src.bytes]
        if sv >> (src.bytes * 8 - 1):
            sv -= 1 << (src.bytes * 8)
        sv &= ~(bits - 1)
        dst.ea = address_mask(ctxt, dst.ea + (sv >> 3))
    src.val &= dst.bytes * 8 - 1


def imm_size(ctxt: X86EmulateCtxt) -> int:
    size = 1 if ctxt.d & ByteOp else ctxt.op_bytes
    return 4 if size == 8 else size


def decode_imm(ctxt: X86EmulateCtxt, op: Operand, size: int, sign_extension: bool) -> None:
    op.type, op.bytes, op.ea = OP_IMM, size, ctxt._eip
    v = insn_fetch(ctxt, size, True)
    op.val = (v & U64) if sign_extension else v & _SIZE_MASK[size]


def _mem_common(ctxt: X86EmulateCtxt, op: Operand) -> None:
    op.assign(ctxt.memop)
    ctxt.memopp = op
    if ctxt.d & BitOp:
        fetch_bit_operand(ctxt)
    op.orig_val = op.val


def decode_operand(ctxt: X86EmulateCtxt, op: Operand, d: int) -> None:
    """Fill one operand from its 5-bit type code."""
    if d == OpReg:
        decode_register_operand(ctxt, op)
    elif d == OpMem:
        memop = ctxt.memop
        memop.bytes = 1 if ctxt.d & ByteOp else ctxt.op_bytes
        # _mem_common / Operand.assign, inlined: `*op = ctxt->memop`
        op.type, op.bytes, op.count = memop.type, memop.bytes, memop.count
        op.val, op.orig_val = memop.val, memop.orig_val
        op.reg, op.reg_shift = memop.reg, memop.reg_shift
        op.ea, op.seg, op.xmm, op.mm = memop.ea, memop.seg, memop.xmm, memop.mm
        ctxt.memopp = op
        if ctxt.d & BitOp:
            fetch_bit_operand(ctxt)
        op.orig_val = op.val
    elif d <= OpImplicit or d == 31:  # OpNone, OpImplicit: special instructions decode their own
        op.type = OP_NONE
    elif d == OpImm:
        decode_imm(ctxt, op, imm_size(ctxt), True)
    elif d == OpImmByte:
        decode_imm(ctxt, op, 1, True)
    elif d == OpAcc or d == OpAccLo or d == OpAccHi or d == OpDX:
        _decode_acc(ctxt, op, d)
    elif d == OpDI or d == OpSI or d == OpXLat:
        _decode_string(ctxt, op, d)
    elif d == OpImmUByte:
        decode_imm(ctxt, op, 1, False)
    elif d == OpCL:
        op.type, op.bytes, op.val = OP_IMM, 1, reg_read(ctxt, VCPU_REGS_RCX) & 0xFF
    elif d == OpOne:
        op.type, op.bytes, op.val = OP_IMM, 1, 1
    elif d == OpImm64:
        decode_imm(ctxt, op, ctxt.op_bytes, True)
    elif d in (OpMem8, OpMem16, OpMem32, OpMem64, OpMemFAddr):
        _decode_sized_mem(ctxt, op, d)
    elif d == OpImmU16:
        decode_imm(ctxt, op, 2, False)
    elif d == OpImmU:
        decode_imm(ctxt, op, imm_size(ctxt), False)
    elif d == OpImmFAddr:
        op.type, op.ea, op.bytes = OP_IMM, ctxt._eip, ctxt.op_bytes + 2
        op.val = insn_fetch(ctxt, op.bytes)
    elif d in _SREG_OP:
        op.type, op.val = OP_IMM, _SREG_OP[d]
    else:
        op.type = OP_NONE


def _decode_acc(ctxt: X86EmulateCtxt, op: Operand, d: int) -> None:
    byteop = ctxt.d & ByteOp
    if d == OpAccHi:
        if byteop:
            op.type = OP_NONE
            return
        op.bytes, op.reg = ctxt.op_bytes, VCPU_REGS_RDX
    elif d == OpDX:
        op.bytes, op.reg = 2, VCPU_REGS_RDX
    elif d == OpAccLo:
        op.bytes, op.reg = (2 if byteop else ctxt.op_bytes), VCPU_REGS_RAX
    else:
        op.bytes, op.reg = (1 if byteop else ctxt.op_bytes), VCPU_REGS_RAX
    op.type, op.reg_shift = OP_REG, 0
    fetch_register_operand(ctxt, op)
    op.orig_val = op.val


def _decode_string(ctxt: X86EmulateCtxt, op: Operand, d: int) -> None:
    op.type = OP_MEM
    op.bytes = 1 if ctxt.d & ByteOp else ctxt.op_bytes
    op.val = 0
    if d == OpDI:
        op.ea, op.seg, op.count = address_mask(ctxt, reg_read(ctxt, VCPU_REGS_RDI)), \
            VCPU_SREG_ES, 1
    elif d == OpSI:
        op.ea, op.seg, op.count = address_mask(ctxt, reg_read(ctxt, VCPU_REGS_RSI)), \
            ctxt.seg_override, 1
    else:  # XLAT: [rBX + AL]
        op.ea = address_mask(ctxt, reg_read(ctxt, VCPU_REGS_RBX)
                             + (reg_read(ctxt, VCPU_REGS_RAX) & 0xFF))
        op.seg = ctxt.seg_override


def _decode_sized_mem(ctxt: X86EmulateCtxt, op: Operand, d: int) -> None:
    memop = ctxt.memop
    if d == OpMem8:
        memop.bytes = 1
        if memop.type == OP_REG:
            decode_register(ctxt, memop, ctxt.modrm_rm, True)
            fetch_register_operand(ctxt, memop)
    elif d == OpMem16:
        memop.bytes = 2
    elif d == OpMem32:
        memop.bytes = 4
    elif d == OpMem64:
        memop.bytes = 16 if ctxt.op_bytes == 8 else 8
    else:
        memop.bytes = ctxt.op_bytes + 2
    _mem_common(ctxt, op)


# --- CET ---------------------------------------------------------------------------------
def is_ibt_instruction(flags: int) -> bool:
    if not flags & IsBranch:
        return False
    if not flags & NearBranch:
        return True  # far transfers always count
    return (flags & SrcMask) in (SrcReg, SrcMem, SrcMem16, SrcMem32)


def _cet_blocks(ctxt: X86EmulateCtxt) -> bool:
    """Refuse branches/shadow-stack ops the emulator cannot track with CET enabled."""
    d = ctxt.d
    ibt, shstk = is_ibt_instruction(d), bool(d & ShadowStack)
    if not (ibt or shstk) or not ctxt.ops.get_cr(ctxt, 4) & X86_CR4_CET:
        return False
    u_cet = s_cet = 0
    want_u = not d & NearBranch or ctxt.ops.cpl(ctxt) == 3
    want_s = not d & NearBranch or ctxt.ops.cpl(ctxt) != 3
    if want_u:
        rc, u_cet = ctxt.ops.get_msr(ctxt, MSR_IA32_U_CET)
        if rc:
            return True
    if want_s:
        rc, s_cet = ctxt.ops.get_msr(ctxt, MSR_IA32_S_CET)
        if rc:
            return True
    cet = u_cet | s_cet
    return bool((cet & CET_SHSTK_EN and shstk) or (cet & CET_ENDBR_EN and ibt))


# --- the decoder -------------------------------------------------------------------------
@kfunc("emulation_type")
def x86_decode_insn(ctxt: X86EmulateCtxt, insn: bytes | None, insn_len: int,
                    emulation_type: int) -> int:
    """Decode one instruction into ctxt. EMULATION_OK or EMULATION_FAILED."""
    emul_type = int(emulation_type)
    try:
        mode = ctxt.mode
        memop = ctxt.memop
        memop.type = OP_NONE
        ctxt.memopp = None
        # _eip == eip0 + fetch.ptr throughout the decode; the inlined one-byte fetches
        # below advance only fetch.ptr and _eip is brought level before anything reads it.
        eip0 = ctxt._eip = ctxt.eip
        f = ctxt.fetch
        f.ptr = 0
        f.end = insn_len
        ctxt.opcode_len = 1
        ctxt.intercept = 0
        if insn_len > 0 and insn is not None:
            f.data[:insn_len] = insn if len(insn) == insn_len else insn[:insn_len]
        else:
            f.end = 0
            rc = __do_insn_fetch_bytes(ctxt, 1)
            if rc != X86EMUL_CONTINUE:
                return _decode_failed(ctxt, rc)

        # A decode cache sits here (decode_cache.py; the kernel has none): steps 2-9 of bytes seen before.
        key = None
        if (_CACHE_ON and mode != X86EMUL_MODE_REAL and mode != X86EMUL_MODE_VM86
                and not (ctxt.rex_prefix | ctxt.lock_prefix | ctxt.rep_prefix)):
            cache = ctxt.decode_cache
            if cache is None:
                cache = decode_cache(ctxt)
            # The key's bytes: the caller's insn itself when it is all that was decoded, else a copy.
            code = insn if insn.__class__ is bytes and f.end == insn_len == len(insn) else bytes(f.data[:f.end])
            key = (mode, emul_type & _EMULTYPE_TRAP_UD, code)
            hit = cache.entries.get(key)
            if hit is not None:
                cache.hits += 1
                return _decode_operands(ctxt, _restore_decoded(ctxt, hit, eip0))
            cache.misses += 1
            end0 = f.end

        # 2. default operand/address sizes
        if mode == X86EMUL_MODE_PROT64:
            def_op, def_ad = 4, 8
        elif mode == X86EMUL_MODE_PROT32:
            def_op = def_ad = 4
        elif mode == X86EMUL_MODE_PROT16:
            def_op = def_ad = 2
        elif mode == X86EMUL_MODE_REAL or mode == X86EMUL_MODE_VM86:
            cs = ctxt.ops.get_segment(ctxt, VCPU_SREG_CS)
            def_op = def_ad = 4 if cs is not None and cs[1].d else 2
        else:
            return EMULATION_FAILED
        ctxt.op_bytes, ctxt.ad_bytes = def_op, def_ad

        # 3. legacy prefixes; a legacy prefix after REX cancels the REX
        op_prefix = has_seg_override = False
        data = f.data
        while True:
            ptr = f.ptr
            if ptr < f.end:  # insn_fetch(ctxt, 1), inlined
                b = data[ptr]
                f.ptr = ptr + 1
            else:
                ctxt._eip = eip0 + ptr
                b = insn_fetch(ctxt, 1)
            ctxt.b = b
            kind = _PREFIX_KIND[b]
            if not kind:
                break
            if kind == _PFX_REX:
                if mode != X86EMUL_MODE_PROT64:
                    break
                ctxt.rex_prefix = b
                continue
            if kind == _PFX_OP:
                op_prefix = True
                ctxt.op_bytes = def_op ^ 6
            elif kind == _PFX_AD:
                ctxt.ad_bytes = def_ad ^ (12 if mode == X86EMUL_MODE_PROT64 else 6)
            elif kind == _PFX_SEG:
                has_seg_override = True
                ctxt.seg_override = _SEG_PREFIX[b]
            elif kind == _PFX_LOCK:
                ctxt.lock_prefix = 1
            else:  # F2 / F3
                ctxt.rep_prefix = b
            ctxt.rex_prefix = 0
        if ctxt.rex_prefix & 8:
            ctxt.op_bytes = 8  # REX.W

        # 4. opcode maps
        if b == 0x0F:
            ctxt._eip = eip0 + f.ptr
            ctxt.opcode_len = 2
            b = ctxt.b = insn_fetch(ctxt, 1)
            opcode = twobyte_table[b]
            if b == 0x38:
                ctxt.opcode_len = 3
                b = ctxt.b = insn_fetch(ctxt, 1)
                opcode = opcode_map_0f_38[b]
        else:
            opcode = opcode_table[b]
        d = opcode.flags

        # 5. ModRM; C4/C5 are VEX (not LES/LDS) in 64-bit mode or with mod == 3
        if d & ModRM:
            ptr = f.ptr
            if ptr < f.end:  # insn_fetch(ctxt, 1), inlined
                ctxt.modrm = data[ptr]
                f.ptr = ptr + 1
            else:
                ctxt._eip = eip0 + ptr
                ctxt.modrm = insn_fetch(ctxt, 1)
        ctxt._eip = eip0 + f.ptr
        if ((b == 0xC4 or b == 0xC5) and ctxt.opcode_len == 1
                and (mode == X86EMUL_MODE_PROT64 or ctxt.modrm & 0xC0 == 0xC0)):
            ctxt.d = d
            if ctxt.features.vex_moves:
                vex_op = decode_vex(ctxt, op_prefix)
                if vex_op is None:
                    return EMULATION_FAILED
                opcode, op_prefix = vex_op, False
                d = ctxt.d
            else:
                d = NotImpl  # vex-prefixed instructions are not implemented

        # 6. group mechanisms
        while d & GroupMask:
            kind = d & GroupMask
            modrm = ctxt.modrm
            if kind == Group:
                opcode = opcode.u[(modrm >> 3) & 7]
            elif kind == GroupDual:
                tbl = opcode.u.mod3 if modrm >> 6 == 3 else opcode.u.mod012
                opcode = tbl[(modrm >> 3) & 7]
            elif kind == RMExt:
                opcode = opcode.u[modrm & 7]
            elif kind == Prefix:
                if ctxt.rep_prefix and op_prefix:
                    ctxt.d = d
                    return EMULATION_FAILED
                g = opcode.u
                if op_prefix:
                    opcode = g.pfx_66
                else:
                    simd = ctxt.rep_prefix
                    if simd == 0:
                        opcode = g.pfx_no
                    elif simd == 0xF2:
                        opcode = g.pfx_f2
                    elif simd == 0xF3:
                        opcode = g.pfx_f3
                    else:
                        raise KeyError(simd)
            elif kind == Escape:
                esc = opcode.u
                opcode = esc.high[modrm - 0xC0] if modrm > 0xBF else esc.op[(modrm >> 3) & 7]
            elif kind == InstrDual:
                opcode = opcode.u.mod3 if modrm >> 6 == 3 else opcode.u.mod012
            elif kind == ModeDual:
                opcode = opcode.u.mode64 if mode == X86EMUL_MODE_PROT64 else opcode.u.mode32
            d = (d & ~GroupMask) | opcode.flags
        ctxt.d = d

        # 7. branch accounting, unrecognised, CET
        ctxt.is_branch = (opcode.flags & IsBranch) != 0
        if d == 0:
            return EMULATION_FAILED
        if d & _CET_RELEVANT and _cet_blocks(ctxt):
            return EMULATION_FAILED
        ctxt.execute = opcode.execute

        # 8. a #UD intercept only emulates EmulateOnUD opcodes
        if emul_type & _EMULTYPE_TRAP_UD and not d & EmulateOnUD:
            return EMULATION_FAILED

        # 9. rare flags
        if d & _RARE:
            ctxt.check_perm = opcode.check_perm
            ctxt.intercept = opcode.intercept
            if d & NotImpl:
                return EMULATION_FAILED
            if mode == X86EMUL_MODE_PROT64:
                if ctxt.op_bytes == 4 and d & Stack:
                    ctxt.op_bytes = 8
                elif d & NearBranch:
                    ctxt.op_bytes = 8
            if d & Op3264:
                ctxt.op_bytes = 8 if mode == X86EMUL_MODE_PROT64 else 4
            if d & No16 and ctxt.op_bytes == 2:
                ctxt.op_bytes = 4
            if d & Sse:
                ctxt.op_bytes = 32 if ctxt.vex and ctxt.vex_l else 16
            elif d & Mmx:
                ctxt.op_bytes = 8

        if key is not None and f.end == end0 and not ctxt.vex and not d & _CET_RELEVANT:
            cache.store(key, ctxt, has_seg_override)
        return _decode_operands(ctxt, has_seg_override)
    except FetchFailed as e:  # insn_fetch's `goto done`
        return _decode_failed(ctxt, e.rc)


def _decode_failed(ctxt: X86EmulateCtxt, rc: int) -> int:
    """`done:` with rc != X86EMUL_CONTINUE: a fetch fault is the guest's exception."""
    if rc == X86EMUL_PROPAGATE_FAULT:
        ctxt.have_exception = True
    return EMULATION_FAILED


def _decode_operands(ctxt: X86EmulateCtxt, has_seg_override: bool) -> int:
    """Steps 10-11: they read registers, so they run on every decode, cached or not."""
    d = ctxt.d
    memop = ctxt.memop
    # 10. ModRM/SIB or moffs; default segment
    if d & ModRM:
        decode_modrm(ctxt, memop)
        if not has_seg_override:
            has_seg_override = True
            ctxt.seg_override = ctxt.modrm_seg
    elif d & MemAbs:
        decode_abs(ctxt, memop)
    if not has_seg_override:
        ctxt.seg_override = VCPU_SREG_DS
    memop.seg = ctxt.seg_override

    # 11. operands: src, src2, dst (decode_operand's OpNone/OpImplicit case without the call)
    code = (d >> SrcShift) & OpMask
    if code <= OpImplicit or code == 31:
        ctxt.src.type = OP_NONE
    else:
        decode_operand(ctxt, ctxt.src, code)
    code = (d >> Src2Shift) & OpMask
    if code <= OpImplicit or code == 31:
        ctxt.src2.type = OP_NONE
    else:
        decode_operand(ctxt, ctxt.src2, code)
    code = (d >> DstShift) & OpMask
    if code <= OpImplicit or code == 31:
        ctxt.dst.type = OP_NONE
    else:
        decode_operand(ctxt, ctxt.dst, code)
    if ctxt.rip_relative and ctxt.memopp is not None:
        ctxt.memopp.ea = address_mask(ctxt, ctxt.memopp.ea + ctxt._eip)
    return EMULATION_OK


def _restore_decoded(ctxt: X86EmulateCtxt, e: tuple, eip0: int) -> bool:
    """A cache hit: write what steps 2-9 wrote for these bytes (only what they write: ModRM for
    ModRM opcodes, check_perm for the rare flags); returns has_seg_override."""
    (ctxt.op_bytes, ctxt.ad_bytes, ctxt.b, ctxt.rex_prefix, ctxt.lock_prefix, ctxt.rep_prefix, ctxt.seg_override,
     has_seg_override, ctxt.opcode_len, modrm, d, ctxt.is_branch, ctxt.execute, check_perm, ctxt.intercept,
     ptr) = e
    ctxt.d = d
    if d & ModRM:
        ctxt.modrm = modrm
    if d & _RARE:
        ctxt.check_perm = check_perm
    ctxt.fetch.ptr = ptr
    ctxt._eip = eip0 + ptr
    return has_seg_override
