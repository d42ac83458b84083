"""Model of emulate.c's decoder: x86_decode_insn, decode_modrm, decode_abs, decode_operand.

Steps (reference §9.6): 1 fetch; 2 default sizes by mode; 3 legacy prefixes and REX;
4 opcode map; 5 ModRM and the VEX rejection; 6 group resolution; 7 is_branch, CET;
8 TRAP_UD rule; 9 rare flags (NotImpl, 64-bit stack/branch sizes, Op3264, No16, Sse/Mmx);
10 ModRM/SIB or moffs; 11 operands src, src2, dst and the RIP-relative fix-up.
"""

from __future__ import annotations

from .codes import (CET_ENDBR_EN, CET_SHSTK_EN, EMULATION_FAILED, EMULATION_OK,
                    EMULTYPE_TRAP_UD, MSR_IA32_S_CET, MSR_IA32_U_CET, OP_IMM, OP_MEM, OP_MM,
                    OP_NONE, OP_REG, OP_XMM, PAGE_SIZE, VCPU_REGS_RAX, VCPU_REGS_RBP,
                    VCPU_REGS_RBX, VCPU_REGS_RCX, VCPU_REGS_RDI, VCPU_REGS_RDX,
                    VCPU_REGS_RSI, VCPU_REGS_RSP, VCPU_SREG_CS, VCPU_SREG_DS, VCPU_SREG_ES,
                    VCPU_SREG_FS, VCPU_SREG_GS, VCPU_SREG_SS, X86_CR4_CET, X86EMUL_CONTINUE,
                    X86EMUL_F_FETCH, X86EMUL_MODE_PROT16, X86EMUL_MODE_PROT32,
                    X86EMUL_MODE_PROT64, X86EMUL_MODE_REAL, X86EMUL_MODE_VM86,
                    X86EMUL_PROPAGATE_FAULT)
from .ctxt import Operand, X86EmulateCtxt, fetch_register_operand, reg_read
from .flags import (BitOp, ByteOp, IncSP, CheckPerm, DstShift, Escape, Group, GroupDual, GroupMask,
                    InstrDual, Intercept, IsBranch, MemAbs, Mmx, ModeDual, ModRM, NearBranch,
                    No16, NoMod, NotImpl, Op3264, OpAcc, OpAccHi, OpAccLo, OpCL, OpCS, OpDI,
                    OpDS, OpDX, OpES, OpFS, OpGS, OpImm, OpImm64, OpImmByte, OpImmFAddr,
                    OpImmU, OpImmU16, OpImmUByte, OpMask, OpMem, OpMem8, OpMem16, OpMem32,
                    OpMem64, OpMemFAddr, OpOne, OpReg, OpSI, OpSS, OpXLat, Prefix, RMExt,
                    ShadowStack, Src2Shift, SrcMask, SrcMem,
                    SrcMem16, SrcMem32, SrcReg, SrcShift, Sse, Stack, EmulateOnUD)
from .memaccess import SegmentedAddress, __linearize, address_mask, emulate_gp
from .tables import opcode_map_0f_38, opcode_table, twobyte_table

U64 = 0xFFFFFFFFFFFFFFFF
_SEG_PREFIX = {0x26: VCPU_SREG_ES, 0x2E: VCPU_SREG_CS, 0x36: VCPU_SREG_SS,
               0x3E: VCPU_SREG_DS, 0x64: VCPU_SREG_FS, 0x65: VCPU_SREG_GS}
_SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: U64}
_SREG_OP = {OpES: VCPU_SREG_ES, OpCS: VCPU_SREG_CS, OpSS: VCPU_SREG_SS, OpDS: VCPU_SREG_DS,
            OpFS: VCPU_SREG_FS, OpGS: VCPU_SREG_GS}
_FAILED = -1  # any non-CONTINUE code makes x86_decode_insn fail
_RARE = NotImpl | Stack | Op3264 | Sse | Mmx | Intercept | CheckPerm | NearBranch | No16


class _FetchFailed(Exception):
    """Internal `goto done` of insn_fetch: carries the X86EMUL_* code."""

    def __init__(self, rc: int) -> None:
        self.rc = rc


# --- instruction fetch -----------------------------------------------------------------
def __do_insn_fetch_bytes(ctxt: X86EmulateCtxt, op_size: int) -> int:
    """Fetch as much as allowed (15-byte cap, segment limit, page end) in one go."""
    cur_size = ctxt.fetch.end
    addr = SegmentedAddress((ctxt.eip + cur_size) & U64, VCPU_SREG_CS)
    rc, linear, max_size = __linearize(ctxt, addr, 0, ctxt.mode, X86EMUL_F_FETCH)
    if rc != X86EMUL_CONTINUE:
        return rc
    size = min(15 ^ cur_size, max_size, PAGE_SIZE - (linear % PAGE_SIZE))
    if size < op_size:
        return emulate_gp(ctxt, 0)
    view = memoryview(ctxt.fetch.data)[cur_size:cur_size + size]
    rc = ctxt.ops.fetch(ctxt, linear, view, size, ctxt.exception)
    if rc != X86EMUL_CONTINUE:
        return rc
    ctxt.fetch.end += size
    return X86EMUL_CONTINUE


def insn_fetch(ctxt: X86EmulateCtxt, size: int, signed: bool = False) -> int:
    """Next `size` instruction bytes as an integer; advances _eip."""
    f = ctxt.fetch
    if f.end - f.ptr < size:
        rc = __do_insn_fetch_bytes(ctxt, size - (f.end - f.ptr))
        if rc != X86EMUL_CONTINUE:
            raise _FetchFailed(rc)
    ptr = f.ptr
    f.ptr = ptr + size
    ctxt._eip += size
    if size == 1:
        v = f.data[ptr]
        return v - 0x100 if signed and v & 0x80 else v
    return int.from_bytes(f.data[ptr:ptr + size], "little", signed=signed)


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
    reg = ctxt.modrm_reg if ctxt.d & ModRM else (ctxt.b & 7) | ((ctxt.rex_prefix & 1) << 3)
    if ctxt.d & Sse:
        _vec_reg(ctxt, op, reg)
        return
    if ctxt.d & Mmx:
        op.type, op.bytes, op.mm = OP_MM, 8, reg & 7
        return
    op.type = OP_REG
    op.bytes = 1 if ctxt.d & ByteOp else ctxt.op_bytes
    decode_register(ctxt, op, reg, bool(ctxt.d & ByteOp))
    fetch_register_operand(ctxt, op)
    op.orig_val = op.val


def decode_modrm(ctxt: X86EmulateCtxt, op: Operand) -> None:
    """ModRM/SIB/displacement in 16-bit or 32/64-bit addressing (RIP-relative in 64)."""
    rex = ctxt.rex_prefix
    index_reg = (rex << 2) & 8
    base_reg = (rex << 3) & 8
    modrm = ctxt.modrm
    ctxt.modrm_mod = mod = modrm >> 6
    ctxt.modrm_reg = ((rex << 1) & 8) | ((modrm >> 3) & 7)
    ctxt.modrm_rm = rm = base_reg | (modrm & 7)
    ctxt.modrm_seg = VCPU_SREG_DS
    if mod == 3 or ctxt.d & NoMod:
        op.type = OP_REG
        op.bytes = 1 if ctxt.d & ByteOp else ctxt.op_bytes
        decode_register(ctxt, op, rm, bool(ctxt.d & ByteOp))
        if ctxt.d & Sse:
            _vec_reg(ctxt, op, rm)
            return
        if ctxt.d & Mmx:
            op.type, op.bytes, op.mm = OP_MM, 8, rm & 7
            return
        fetch_register_operand(ctxt, op)
        return
    op.type = OP_MEM
    ea = 0
    if ctxt.ad_bytes == 2:
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
        if rm & 7 == 4:
            sib = insn_fetch(ctxt, 1)
            index_reg |= (sib >> 3) & 7
            base_reg |= sib & 7
            scale = sib >> 6
            if base_reg & 7 == 5 and mod == 0:
                ea += insn_fetch(ctxt, 4, True)
            else:
                ea += reg_read(ctxt, base_reg)
                if base_reg in (VCPU_REGS_RSP, VCPU_REGS_RBP):
                    ctxt.modrm_seg = VCPU_SREG_SS
                if ctxt.d & IncSP and base_reg == VCPU_REGS_RSP:
                    ea += ctxt.op_bytes  # POP [rSP] addresses after the increment
            if index_reg != 4:
                ea += reg_read(ctxt, index_reg) << scale
        elif rm & 7 == 5 and mod == 0:
            ea += insn_fetch(ctxt, 4, True)
            if ctxt.mode == X86EMUL_MODE_PROT64:
                ctxt.rip_relative = True
        else:
            ea += reg_read(ctxt, rm)
            if rm in (VCPU_REGS_RSP, VCPU_REGS_RBP):
                ctxt.modrm_seg = VCPU_SREG_SS
        if mod == 1:
            ea += insn_fetch(ctxt, 1, True)
        elif mod == 2:
            ea += insn_fetch(ctxt, 4, True)
    ea &= U64
    op.ea = ea if ctxt.ad_bytes == 8 else ea & 0xFFFFFFFF


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
        ctxt.memop.bytes = 1 if ctxt.d & ByteOp else ctxt.op_bytes
        _mem_common(ctxt, op)
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
    else:  # OpNone, OpImplicit: special instructions decode their own operands
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
def x86_decode_insn(ctxt: X86EmulateCtxt, insn: bytes | None, insn_len: int,
                    emulation_type: int) -> int:
    """Decode one instruction into ctxt. EMULATION_OK or EMULATION_FAILED."""
    try:
        rc = _decode(ctxt, insn, insn_len, int(emulation_type))
    except _FetchFailed as e:
        rc = e.rc
    if rc == X86EMUL_PROPAGATE_FAULT:
        ctxt.have_exception = True
    return EMULATION_OK if rc == X86EMUL_CONTINUE else EMULATION_FAILED


def _decode(ctxt: X86EmulateCtxt, insn: bytes | None, insn_len: int, emul_type: int) -> int:
    mode = ctxt.mode
    ctxt.memop.type = OP_NONE
    ctxt.memopp = None
    ctxt._eip = ctxt.eip
    ctxt.fetch.ptr = 0
    ctxt.fetch.end = insn_len
    ctxt.opcode_len = 1
    ctxt.intercept = 0
    if insn_len > 0 and insn is not None:
        ctxt.fetch.data[:insn_len] = insn[:insn_len]
    else:
        ctxt.fetch.end = 0
        rc = __do_insn_fetch_bytes(ctxt, 1)
        if rc != X86EMUL_CONTINUE:
            return rc

    # 2. default operand/address sizes
    if mode in (X86EMUL_MODE_REAL, X86EMUL_MODE_VM86):
        cs = ctxt.ops.get_segment(ctxt, VCPU_SREG_CS)
        def_op = def_ad = 4 if cs is not None and cs[1].d else 2
    elif mode == X86EMUL_MODE_PROT16:
        def_op = def_ad = 2
    elif mode == X86EMUL_MODE_PROT32:
        def_op = def_ad = 4
    elif mode == X86EMUL_MODE_PROT64:
        def_op, def_ad = 4, 8
    else:
        return _FAILED
    ctxt.op_bytes, ctxt.ad_bytes = def_op, def_ad

    # 3. legacy prefixes; a legacy prefix after REX cancels the REX
    op_prefix = has_seg_override = False
    while True:
        b = ctxt.b = insn_fetch(ctxt, 1)
        if b == 0x66:
            op_prefix = True
            ctxt.op_bytes = def_op ^ 6
        elif b == 0x67:
            ctxt.ad_bytes = def_ad ^ (12 if mode == X86EMUL_MODE_PROT64 else 6)
        elif b in _SEG_PREFIX:
            has_seg_override = True
            ctxt.seg_override = _SEG_PREFIX[b]
        elif 0x40 <= b <= 0x4F:
            if mode != X86EMUL_MODE_PROT64:
                break
            ctxt.rex_prefix = b
            continue
        elif b == 0xF0:
            ctxt.lock_prefix = 1
        elif b in (0xF2, 0xF3):
            ctxt.rep_prefix = b
        else:
            break
        ctxt.rex_prefix = 0
    if ctxt.rex_prefix & 8:
        ctxt.op_bytes = 8  # REX.W

    # 4. opcode maps
    opcode = opcode_table[b]
    if b == 0x0F:
        ctxt.opcode_len = 2
        b = ctxt.b = insn_fetch(ctxt, 1)
        opcode = twobyte_table[b]
        if b == 0x38:
            ctxt.opcode_len = 3
            b = ctxt.b = insn_fetch(ctxt, 1)
            opcode = opcode_map_0f_38[b]
    ctxt.d = opcode.flags

    # 5. ModRM; C4/C5 are VEX (not LES/LDS) in 64-bit mode or with mod == 3
    if ctxt.d & ModRM:
        ctxt.modrm = insn_fetch(ctxt, 1)
    if (ctxt.opcode_len == 1 and b in (0xC4, 0xC5)
            and (mode == X86EMUL_MODE_PROT64 or ctxt.modrm & 0xC0 == 0xC0)):
        if ctxt.features.vex_moves:
            from .vex import decode_vex
            vex_op = decode_vex(ctxt, op_prefix)
            if vex_op is None:
                return _FAILED
            opcode, op_prefix = vex_op, False
        else:
            ctxt.d = NotImpl  # vex-prefixed instructions are not implemented

    # 6. group mechanisms
    while ctxt.d & GroupMask:
        kind = ctxt.d & GroupMask
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
                return _FAILED
            simd = 0x66 if op_prefix else ctxt.rep_prefix
            g = opcode.u
            opcode = {0: g.pfx_no, 0x66: g.pfx_66, 0xF2: g.pfx_f2, 0xF3: g.pfx_f3}[simd]
        elif kind == Escape:
            esc = opcode.u
            opcode = esc.high[modrm - 0xC0] if modrm > 0xBF else esc.op[(modrm >> 3) & 7]
        elif kind == InstrDual:
            opcode = opcode.u.mod3 if modrm >> 6 == 3 else opcode.u.mod012
        elif kind == ModeDual:
            opcode = opcode.u.mode64 if mode == X86EMUL_MODE_PROT64 else opcode.u.mode32
        ctxt.d = (ctxt.d & ~GroupMask) | opcode.flags

    # 7. branch accounting, unrecognised, CET
    ctxt.is_branch = bool(opcode.flags & IsBranch)
    if ctxt.d == 0:
        return _FAILED
    if _cet_blocks(ctxt):
        return _FAILED
    ctxt.execute = opcode.u if callable(opcode.u) else None

    # 8. a #UD intercept only emulates EmulateOnUD opcodes
    if emul_type & EMULTYPE_TRAP_UD and not ctxt.d & EmulateOnUD:
        return _FAILED

    # 9. rare flags
    d = ctxt.d
    if d & _RARE:
        ctxt.check_perm = opcode.check_perm
        ctxt.intercept = opcode.intercept
        if d & NotImpl:
            return _FAILED
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

    # 10. ModRM/SIB or moffs; default segment
    if d & ModRM:
        decode_modrm(ctxt, ctxt.memop)
        if not has_seg_override:
            has_seg_override = True
            ctxt.seg_override = ctxt.modrm_seg
    elif d & MemAbs:
        decode_abs(ctxt, ctxt.memop)
    if not has_seg_override:
        ctxt.seg_override = VCPU_SREG_DS
    ctxt.memop.seg = ctxt.seg_override

    # 11. operands: src, src2, dst
    decode_operand(ctxt, ctxt.src, (d >> SrcShift) & OpMask)
    decode_operand(ctxt, ctxt.src2, (d >> Src2Shift) & OpMask)
    decode_operand(ctxt, ctxt.dst, (d >> DstShift) & OpMask)
    if ctxt.rip_relative and ctxt.memopp is not None:
        ctxt.memopp.ea = address_mask(ctxt, ctxt.memopp.ea + ctxt._eip)
    return X86EMUL_CONTINUE


