"""Model of emulate.c's opcode tables (linux-next ~v6.18): opcode_table, twobyte_table,
opcode_map_0f_38, the group / gprefix / escape / instr_dual / mode_dual sub-tables.

Data only, in the kernel's order, one `# 0xNN - 0xNN` comment per row block, so it can
be diffed against emulate.c. Fastops (`F`) name our Python ALU functions.
"""

from __future__ import annotations

from .em_basic import (check_perm_in, check_perm_out, em_aad, em_aam, em_bsf_c, em_bsr_c,
                       em_bswap, em_cli, em_cmpxchg, em_cmpxchg8b, em_cwd, em_das, em_enter,
                       em_imul_3op, em_in, em_lahf, em_leave, em_mov, em_movbe, em_movsxd,
                       em_out, em_pop, em_pop_sreg, em_popa, em_popf, em_push, em_push_sreg,
                       em_pusha, em_pushf, em_sahf, em_sti, em_xchg)
from .em_branch import (em_call, em_call_far, em_call_near_abs, em_iret, em_jcxz,
                        em_jmp_abs, em_jmp_far, em_loop, em_ret, em_ret_far, em_ret_far_imm,
                        em_ret_near_imm, em_syscall, em_sysenter, em_sysexit)
from .em_system import (check_cr_access, check_dr_read, check_dr_write, check_rdpmc,
                        check_rdtsc, check_svme, check_svme_pa, em_clflush, em_clflushopt,
                        em_clts, em_cpuid, em_cr_write, em_dr_write, em_fninit, em_fnstcw,
                        em_fnstsw, em_fxrstor, em_fxsave, em_hypercall, em_invlpg, em_lgdt,
                        em_lidt, em_lldt, em_lmsw, em_lseg, em_ltr, em_mov_rm_sreg,
                        em_mov_sreg_rm, em_rdmsr, em_rdpid, em_rdpmc, em_rdtsc, em_rsm,
                        em_sgdt, em_sidt, em_sldt, em_smsw, em_str, em_wrmsr, em_xsetbv)
from .fastop import (em_adc, em_add, em_and, em_bt, em_btc, em_btr, em_bts, em_cmp,
                     em_cmp_r, em_dec, em_div_ex, em_idiv_ex, em_imul, em_imul_ex, em_inc,
                     em_mul_ex, em_neg, em_not, em_or, em_rcl, em_rcr, em_rol, em_ror,
                     em_salc, em_sar, em_sbb, em_shl, em_shld, em_shr, em_shrd, em_sub,
                     em_test, em_xadd, em_xor)
from .flags import (Aligned, Aligned16, BitOp, ByteOp, DstAcc, DstDI, DstDX, DstImmUByte,
                    DstMem, DstMem16, DstMem64, DstReg, DstXacc, EmulateOnUD, ImplicitOps,
                    IncSP, IsBranch, Lock, MemAbs, Mmx, ModRM, Mov, NearBranch, No16, No64,
                    NoAccess, NoMod, NoWrite, Op3264, PageTable, Priv, Prot, ShadowStack,
                    Src2CL, Src2CS, Src2DS, Src2ES, Src2FS, Src2GS, Src2Imm, Src2ImmByte,
                    Src2Mem, Src2One, Src2SS, SrcAcc, SrcDX, SrcImm, SrcImm64, SrcImmByte,
                    SrcImmFAddr, SrcImmU16, SrcImmUByte, SrcMem, SrcMem16, SrcMem32, SrcMem8,
                    SrcMemFAddr, SrcNone, SrcReg, SrcSI, SrcWrite, SrcXLat, Sse, Stack, String,
                    TwoMemOp, Undefined, Unaligned)
from .opcode import (D, DI, DIP, E, EXT, F, F2bv, F6ALU, G, GD, GP, I, I2bv, I2bvIP, ID,
                     II, IIP, MD, EscapeTable, GPrefixTable, GroupDualTable, InstrDualTable,
                     ModeDualTable, N, Opcode, X)

# --- group7 register forms (RMExt) ----------------------------------------------------
group7_rm0 = (N, I(SrcNone | Priv | EmulateOnUD, em_hypercall), *X(6, N))
group7_rm1 = (DI(SrcNone | Priv, "monitor"), DI(SrcNone | Priv, "mwait"), *X(6, N))
group7_rm2 = (N, II(ImplicitOps | Priv, em_xsetbv, "xsetbv"), *X(6, N))
group7_rm3 = (
    DIP(SrcNone | Prot | Priv, "vmrun", check_svme_pa),
    II(SrcNone | Prot | EmulateOnUD, em_hypercall, "vmmcall"),
    DIP(SrcNone | Prot | Priv, "vmload", check_svme_pa),
    DIP(SrcNone | Prot | Priv, "vmsave", check_svme_pa),
    DIP(SrcNone | Prot | Priv, "stgi", check_svme),
    DIP(SrcNone | Prot | Priv, "clgi", check_svme),
    DIP(SrcNone | Prot | Priv, "skinit", check_svme),
    DIP(SrcNone | Prot | Priv, "invlpga", check_svme),
)
group7_rm7 = (N, DIP(SrcNone, "rdtscp", check_rdtsc), *X(6, N))

# --- groups ------------------------------------------------------------------------------
group1 = (
    F(Lock, em_add), F(Lock | PageTable, em_or), F(Lock, em_adc), F(Lock, em_sbb),
    F(Lock | PageTable, em_and), F(Lock, em_sub), F(Lock, em_xor), F(NoWrite, em_cmp),
)
group1A = (I(DstMem | SrcNone | Mov | Stack | IncSP | TwoMemOp, em_pop), *X(7, N))
group2 = (
    F(DstMem | ModRM, em_rol), F(DstMem | ModRM, em_ror), F(DstMem | ModRM, em_rcl),
    F(DstMem | ModRM, em_rcr), F(DstMem | ModRM, em_shl), F(DstMem | ModRM, em_shr),
    F(DstMem | ModRM, em_shl), F(DstMem | ModRM, em_sar),
)
group3 = (
    F(DstMem | SrcImm | NoWrite, em_test), F(DstMem | SrcImm | NoWrite, em_test),
    F(DstMem | SrcNone | Lock, em_not), F(DstMem | SrcNone | Lock, em_neg),
    F(DstXacc | Src2Mem, em_mul_ex), F(DstXacc | Src2Mem, em_imul_ex),
    F(DstXacc | Src2Mem, em_div_ex), F(DstXacc | Src2Mem, em_idiv_ex),
)
group4 = (F(ByteOp | DstMem | SrcNone | Lock, em_inc),
          F(ByteOp | DstMem | SrcNone | Lock, em_dec), *X(6, N))
group5 = (
    F(DstMem | SrcNone | Lock, em_inc), F(DstMem | SrcNone | Lock, em_dec),
    I(SrcMem | NearBranch | IsBranch | ShadowStack, em_call_near_abs),
    I(SrcMemFAddr | ImplicitOps | IsBranch | ShadowStack, em_call_far),
    I(SrcMem | NearBranch | IsBranch, em_jmp_abs),
    I(SrcMemFAddr | ImplicitOps | IsBranch, em_jmp_far),
    I(SrcMem | Stack | TwoMemOp, em_push), D(Undefined),
)
group6 = (
    II(Prot | DstMem, em_sldt, "sldt"), II(Prot | DstMem, em_str, "str"),
    II(Prot | Priv | SrcMem16, em_lldt, "lldt"), II(Prot | Priv | SrcMem16, em_ltr, "ltr"),
    *X(4, N),
)
group7 = GroupDualTable(mod012=(
    II(Mov | DstMem, em_sgdt, "sgdt"), II(Mov | DstMem, em_sidt, "sidt"),
    II(SrcMem | Priv, em_lgdt, "lgdt"), II(SrcMem | Priv, em_lidt, "lidt"),
    II(SrcNone | DstMem | Mov, em_smsw, "smsw"), N,
    II(SrcMem16 | Mov | Priv, em_lmsw, "lmsw"),
    II(SrcMem | ByteOp | Priv | NoAccess, em_invlpg, "invlpg"),
), mod3=(
    EXT(0, group7_rm0), EXT(0, group7_rm1), EXT(0, group7_rm2), EXT(0, group7_rm3),
    II(SrcNone | DstMem | Mov, em_smsw, "smsw"), N,
    II(SrcMem16 | Mov | Priv, em_lmsw, "lmsw"), EXT(0, group7_rm7),
))
group8 = (
    *X(4, N),
    F(DstMem | SrcImmByte | NoWrite, em_bt),
    F(DstMem | SrcImmByte | Lock | PageTable, em_bts),
    F(DstMem | SrcImmByte | Lock, em_btr),
    F(DstMem | SrcImmByte | Lock | PageTable, em_btc),
)
# The "memory" destination is a register here: this is group9's register form.
pfx_0f_c7_7 = GPrefixTable(N, N, N, II(DstMem | ModRM | Op3264 | EmulateOnUD, em_rdpid,
                                       "rdpid"))
group9 = GroupDualTable(
    mod012=(N, I(DstMem64 | Lock | PageTable, em_cmpxchg8b), *X(6, N)),
    mod3=(*X(7, N), GP(0, pfx_0f_c7_7)),
)
group11 = (I(DstMem | SrcImm | Mov | PageTable, em_mov), *X(7, D(Undefined)))
pfx_0f_ae_7 = GPrefixTable(I(SrcMem | ByteOp, em_clflush), I(SrcMem | ByteOp, em_clflushopt),
                           N, N)
group15 = GroupDualTable(
    mod012=(I(ModRM | Aligned16, em_fxsave), I(ModRM | Aligned16, em_fxrstor), *X(5, N),
            GP(0, pfx_0f_ae_7)),
    mod3=tuple(X(8, N)),
)

# --- SSE/MMX prefix tables ------------------------------------------------------------
pfx_0f_6f_0f_7f = GPrefixTable(I(Mmx, em_mov), I(Sse | Aligned, em_mov), N,
                               I(Sse | Unaligned, em_mov))
instr_dual_0f_2b = InstrDualTable(I(0, em_mov), N)
pfx_0f_2b = GPrefixTable(ID(0, instr_dual_0f_2b), ID(0, instr_dual_0f_2b), N, N)
pfx_0f_10_0f_11 = GPrefixTable(I(Unaligned, em_mov), I(Unaligned, em_mov), N, N)
pfx_0f_28_0f_29 = GPrefixTable(I(Aligned, em_mov), I(Aligned, em_mov), N, N)
pfx_0f_e7 = GPrefixTable(N, I(Sse, em_mov), N, N)

# --- x87 escapes ---------------------------------------------------------------------
escape_d9 = EscapeTable(op=(*X(7, N), I(DstMem16 | Mov, em_fnstcw)), high=tuple(X(64, N)))
escape_db = EscapeTable(op=tuple(X(8, N)), high=(
    *X(8, N), *X(8, N), *X(8, N), *X(8, N),        # 0xC0 - 0xDF
    N, N, N, I(ImplicitOps, em_fninit), *X(4, N),  # 0xE0 - 0xE7
    *X(8, N), *X(8, N), *X(8, N),                  # 0xE8 - 0xFF
))
escape_dd = EscapeTable(op=(*X(7, N), I(DstMem16 | Mov, em_fnstsw)), high=tuple(X(64, N)))

instr_dual_0f_c3 = InstrDualTable(I(DstMem | SrcReg | ModRM | No16 | Mov, em_mov), N)
mode_dual_63 = ModeDualTable(N, I(DstReg | SrcMem32 | ModRM | Mov, em_movsxd))
instr_dual_8d = InstrDualTable(D(DstReg | SrcMem | ModRM | NoAccess), N)

_SEG_PUSHPOP = ImplicitOps | Stack | No64

opcode_table: tuple[Opcode, ...] = (
    # 0x00 - 0x07
    *F6ALU(Lock, em_add),
    I(_SEG_PUSHPOP | Src2ES, em_push_sreg), I(_SEG_PUSHPOP | Src2ES, em_pop_sreg),
    # 0x08 - 0x0F
    *F6ALU(Lock | PageTable, em_or), I(_SEG_PUSHPOP | Src2CS, em_push_sreg), N,
    # 0x10 - 0x17
    *F6ALU(Lock, em_adc),
    I(_SEG_PUSHPOP | Src2SS, em_push_sreg), I(_SEG_PUSHPOP | Src2SS, em_pop_sreg),
    # 0x18 - 0x1F
    *F6ALU(Lock, em_sbb),
    I(_SEG_PUSHPOP | Src2DS, em_push_sreg), I(_SEG_PUSHPOP | Src2DS, em_pop_sreg),
    # 0x20 - 0x27
    *F6ALU(Lock | PageTable, em_and), N, N,
    # 0x28 - 0x2F
    *F6ALU(Lock, em_sub), N, I(ByteOp | DstAcc | No64, em_das),
    # 0x30 - 0x37
    *F6ALU(Lock, em_xor), N, N,
    # 0x38 - 0x3F
    *F6ALU(NoWrite, em_cmp), N, N,
    # 0x40 - 0x4F
    *X(8, F(DstReg, em_inc)), *X(8, F(DstReg, em_dec)),
    # 0x50 - 0x57
    *X(8, I(SrcReg | Stack, em_push)),
    # 0x58 - 0x5F
    *X(8, I(DstReg | Stack, em_pop)),
    # 0x60 - 0x67
    I(ImplicitOps | Stack | No64, em_pusha), I(ImplicitOps | Stack | No64, em_popa),
    N, MD(ModRM, mode_dual_63), N, N, N, N,
    # 0x68 - 0x6F
    I(SrcImm | Mov | Stack, em_push),
    I(DstReg | SrcMem | ModRM | Src2Imm, em_imul_3op),
    I(SrcImmByte | Mov | Stack, em_push),
    I(DstReg | SrcMem | ModRM | Src2ImmByte, em_imul_3op),
    *I2bvIP(DstDI | SrcDX | Mov | String | Unaligned, em_in, "ins", check_perm_in),
    *I2bvIP(SrcSI | DstDX | String, em_out, "outs", check_perm_out),
    # 0x70 - 0x7F
    *X(16, D(SrcImmByte | NearBranch | IsBranch)),
    # 0x80 - 0x87
    G(ByteOp | DstMem | SrcImm, group1), G(DstMem | SrcImm, group1),
    G(ByteOp | DstMem | SrcImm | No64, group1), G(DstMem | SrcImmByte, group1),
    *F2bv(DstMem | SrcReg | ModRM | NoWrite, em_test),
    *I2bv(DstMem | SrcReg | ModRM | Lock | PageTable, em_xchg),
    # 0x88 - 0x8F
    *I2bv(DstMem | SrcReg | ModRM | Mov | PageTable, em_mov),
    *I2bv(DstReg | SrcMem | ModRM | Mov, em_mov),
    I(DstMem | SrcNone | ModRM | Mov | PageTable, em_mov_rm_sreg),
    ID(0, instr_dual_8d),
    I(ImplicitOps | SrcMem16 | ModRM, em_mov_sreg_rm),
    G(0, group1A),
    # 0x90 - 0x97
    DI(SrcAcc | DstReg, "pause"), *X(7, D(SrcAcc | DstReg)),
    # 0x98 - 0x9F
    D(DstAcc | SrcNone), I(ImplicitOps | SrcAcc, em_cwd),
    I(SrcImmFAddr | No64 | IsBranch | ShadowStack, em_call_far), N,
    II(ImplicitOps | Stack, em_pushf, "pushf"), II(ImplicitOps | Stack, em_popf, "popf"),
    I(ImplicitOps, em_sahf), I(ImplicitOps, em_lahf),
    # 0xA0 - 0xA7
    *I2bv(DstAcc | SrcMem | Mov | MemAbs, em_mov),
    *I2bv(DstMem | SrcAcc | Mov | MemAbs | PageTable, em_mov),
    *I2bv(SrcSI | DstDI | Mov | String | TwoMemOp, em_mov),
    *F2bv(SrcSI | DstDI | String | NoWrite | TwoMemOp, em_cmp_r),
    # 0xA8 - 0xAF
    *F2bv(DstAcc | SrcImm | NoWrite, em_test),
    *I2bv(SrcAcc | DstDI | Mov | String, em_mov),
    *I2bv(SrcSI | DstAcc | Mov | String, em_mov),
    *F2bv(SrcAcc | DstDI | String | NoWrite, em_cmp_r),
    # 0xB0 - 0xB7
    *X(8, I(ByteOp | DstReg | SrcImm | Mov, em_mov)),
    # 0xB8 - 0xBF
    *X(8, I(DstReg | SrcImm64 | Mov, em_mov)),
    # 0xC0 - 0xC7
    G(ByteOp | Src2ImmByte, group2), G(Src2ImmByte, group2),
    I(ImplicitOps | NearBranch | SrcImmU16 | IsBranch | ShadowStack, em_ret_near_imm),
    I(ImplicitOps | NearBranch | IsBranch | ShadowStack, em_ret),
    I(DstReg | SrcMemFAddr | ModRM | No64 | Src2ES, em_lseg),
    I(DstReg | SrcMemFAddr | ModRM | No64 | Src2DS, em_lseg),
    G(ByteOp, group11), G(0, group11),
    # 0xC8 - 0xCF
    I(Stack | SrcImmU16 | Src2ImmByte, em_enter), I(Stack, em_leave),
    I(ImplicitOps | SrcImmU16 | IsBranch | ShadowStack, em_ret_far_imm),
    I(ImplicitOps | IsBranch | ShadowStack, em_ret_far),
    D(ImplicitOps | IsBranch), DI(SrcImmByte | IsBranch | ShadowStack, "intn"),
    D(ImplicitOps | No64 | IsBranch),
    II(ImplicitOps | IsBranch | ShadowStack, em_iret, "iret"),
    # 0xD0 - 0xD7
    G(Src2One | ByteOp, group2), G(Src2One, group2),
    G(Src2CL | ByteOp, group2), G(Src2CL, group2),
    I(DstAcc | SrcImmUByte | No64, em_aam), I(DstAcc | SrcImmUByte | No64, em_aad),
    F(DstAcc | ByteOp | No64, em_salc), I(DstAcc | SrcXLat | ByteOp, em_mov),
    # 0xD8 - 0xDF
    N, E(0, escape_d9), N, E(0, escape_db), N, E(0, escape_dd), N, N,
    # 0xE0 - 0xE7
    *X(3, I(SrcImmByte | NearBranch | IsBranch, em_loop)),
    I(SrcImmByte | NearBranch | IsBranch, em_jcxz),
    *I2bvIP(SrcImmUByte | DstAcc, em_in, "in", check_perm_in),
    *I2bvIP(SrcAcc | DstImmUByte, em_out, "out", check_perm_out),
    # 0xE8 - 0xEF
    I(SrcImm | NearBranch | IsBranch | ShadowStack, em_call),
    D(SrcImm | ImplicitOps | NearBranch | IsBranch),
    I(SrcImmFAddr | No64 | IsBranch, em_jmp_far),
    D(SrcImmByte | ImplicitOps | NearBranch | IsBranch),
    *I2bvIP(SrcDX | DstAcc, em_in, "in", check_perm_in),
    *I2bvIP(SrcAcc | DstDX, em_out, "out", check_perm_out),
    # 0xF0 - 0xF7
    N, DI(ImplicitOps, "icebp"), N, N,
    DI(ImplicitOps | Priv, "hlt"), D(ImplicitOps),
    G(ByteOp, group3), G(0, group3),
    # 0xF8 - 0xFF
    D(ImplicitOps), D(ImplicitOps), I(ImplicitOps, em_cli), I(ImplicitOps, em_sti),
    D(ImplicitOps), D(ImplicitOps), G(0, group4), G(0, group5),
)

_NOP_HINT = D(ImplicitOps | ModRM | SrcMem | NoAccess)

twobyte_table: tuple[Opcode, ...] = (
    # 0x00 - 0x0F
    G(0, group6), GD(0, group7), N, N,
    N, I(ImplicitOps | EmulateOnUD | IsBranch | ShadowStack, em_syscall),
    II(ImplicitOps | Priv, em_clts, "clts"), N,
    DI(ImplicitOps | Priv, "invd"), DI(ImplicitOps | Priv, "wbinvd"), N, N,
    N, _NOP_HINT, N, N,
    # 0x10 - 0x1F
    GP(ModRM | DstReg | SrcMem | Mov | Sse, pfx_0f_10_0f_11),
    GP(ModRM | DstMem | SrcReg | Mov | Sse, pfx_0f_10_0f_11),
    N, N, N, N, N, N,
    _NOP_HINT,  # 4 * prefetch + 4 * reserved NOP
    _NOP_HINT, N, N,
    _NOP_HINT, _NOP_HINT, _NOP_HINT,  # 8 * reserved NOP each
    _NOP_HINT,  # NOP + 7 * reserved NOP
    # 0x20 - 0x2F
    DIP(ModRM | DstMem | Priv | Op3264 | NoMod, "cr_read", check_cr_access),
    DIP(ModRM | DstMem | Priv | Op3264 | NoMod, "dr_read", check_dr_read),
    IIP(ModRM | SrcMem | Priv | Op3264 | NoMod, em_cr_write, "cr_write", check_cr_access),
    IIP(ModRM | SrcMem | Priv | Op3264 | NoMod, em_dr_write, "dr_write", check_dr_write),
    N, N, N, N,
    GP(ModRM | DstReg | SrcMem | Mov | Sse, pfx_0f_28_0f_29),
    GP(ModRM | DstMem | SrcReg | Mov | Sse, pfx_0f_28_0f_29),
    N, GP(ModRM | DstMem | SrcReg | Mov | Sse, pfx_0f_2b),
    N, N, N, N,
    # 0x30 - 0x3F
    II(ImplicitOps | Priv, em_wrmsr, "wrmsr"),
    IIP(ImplicitOps, em_rdtsc, "rdtsc", check_rdtsc),
    II(ImplicitOps | Priv, em_rdmsr, "rdmsr"),
    IIP(ImplicitOps, em_rdpmc, "rdpmc", check_rdpmc),
    I(ImplicitOps | EmulateOnUD | IsBranch | ShadowStack, em_sysenter),
    I(ImplicitOps | Priv | EmulateOnUD | IsBranch | ShadowStack, em_sysexit),
    N, N,
    *X(8, N),
    # 0x40 - 0x4F
    *X(16, D(DstReg | SrcMem | ModRM)),
    # 0x50 - 0x5F
    *X(16, N),
    # 0x60 - 0x6F
    *X(15, N), GP(SrcMem | DstReg | ModRM | Mov, pfx_0f_6f_0f_7f),
    # 0x70 - 0x7F
    *X(15, N), GP(SrcReg | DstMem | ModRM | Mov, pfx_0f_6f_0f_7f),
    # 0x80 - 0x8F
    *X(16, D(SrcImm | NearBranch | IsBranch)),
    # 0x90 - 0x9F
    *X(16, D(ByteOp | DstMem | SrcNone | ModRM | Mov)),
    # 0xA0 - 0xA7
    I(Stack | Src2FS, em_push_sreg), I(Stack | Src2FS, em_pop_sreg),
    II(ImplicitOps, em_cpuid, "cpuid"),
    F(DstMem | SrcReg | ModRM | BitOp | NoWrite, em_bt),
    F(DstMem | SrcReg | Src2ImmByte | ModRM, em_shld),
    F(DstMem | SrcReg | Src2CL | ModRM, em_shld), N, N,
    # 0xA8 - 0xAF
    I(Stack | Src2GS, em_push_sreg), I(Stack | Src2GS, em_pop_sreg),
    II(EmulateOnUD | ImplicitOps, em_rsm, "rsm"),
    F(DstMem | SrcReg | ModRM | BitOp | Lock | PageTable, em_bts),
    F(DstMem | SrcReg | Src2ImmByte | ModRM, em_shrd),
    F(DstMem | SrcReg | Src2CL | ModRM, em_shrd),
    GD(0, group15), F(DstReg | SrcMem | ModRM, em_imul),
    # 0xB0 - 0xB7
    *I2bv(DstMem | SrcReg | ModRM | Lock | PageTable | SrcWrite, em_cmpxchg),
    I(DstReg | SrcMemFAddr | ModRM | Src2SS, em_lseg),
    F(DstMem | SrcReg | ModRM | BitOp | Lock, em_btr),
    I(DstReg | SrcMemFAddr | ModRM | Src2FS, em_lseg),
    I(DstReg | SrcMemFAddr | ModRM | Src2GS, em_lseg),
    D(DstReg | SrcMem8 | ModRM | Mov), D(DstReg | SrcMem16 | ModRM | Mov),
    # 0xB8 - 0xBF
    N, N, G(BitOp, group8),
    F(DstMem | SrcReg | ModRM | BitOp | Lock | PageTable, em_btc),
    I(DstReg | SrcMem | ModRM, em_bsf_c), I(DstReg | SrcMem | ModRM, em_bsr_c),
    D(DstReg | SrcMem8 | ModRM | Mov), D(DstReg | SrcMem16 | ModRM | Mov),
    # 0xC0 - 0xC7
    *F2bv(DstMem | SrcReg | ModRM | SrcWrite | Lock, em_xadd),
    N, ID(0, instr_dual_0f_c3), N, N, N, GD(0, group9),
    # 0xC8 - 0xCF
    *X(8, I(DstReg, em_bswap)),
    # 0xD0 - 0xDF
    *X(16, N),
    # 0xE0 - 0xEF
    *X(7, N), GP(SrcReg | DstMem | ModRM | Mov, pfx_0f_e7), *X(8, N),
    # 0xF0 - 0xFF
    *X(16, N),
)

instr_dual_0f_38_f0 = InstrDualTable(I(DstReg | SrcMem | Mov, em_movbe), N)
instr_dual_0f_38_f1 = InstrDualTable(I(DstMem | SrcReg | Mov, em_movbe), N)
three_byte_0f_38_f0 = GPrefixTable(ID(0, instr_dual_0f_38_f0), ID(0, instr_dual_0f_38_f0), N, N)
three_byte_0f_38_f1 = GPrefixTable(ID(0, instr_dual_0f_38_f1), ID(0, instr_dual_0f_38_f1), N, N)

# Selected by the third opcode byte, then by prefix.
opcode_map_0f_38: tuple[Opcode, ...] = (
    # 0x00 - 0xEF
    *X(0xF0, N),
    # 0xF0 - 0xF1
    GP(EmulateOnUD | ModRM, three_byte_0f_38_f0),
    GP(EmulateOnUD | ModRM, three_byte_0f_38_f1),
    # 0xF2 - 0xFF
    *X(14, N),
)

assert len(opcode_table) == 256 and len(twobyte_table) == 256 and len(opcode_map_0f_38) == 256
