# emu_shift.S — ROL/ROR/RCL/RCR/SHL/SHR/SAR (by 1, CL and imm8) and SHLD/SHRD on an MMIO
# operand.  GNU as, AT&T.  Modes: prot32, long64.  Defined flags only: CF always (count
# != 0); OF only for a count of 1; SF/ZF/PF for the shifts (not the rotates); AF never.
        .include "kvmsim.inc"
        .include "emu.inc"

# SH op, operand, count-insn-operand, flags in, mask
.macro SH op, cnt, fin, mask, off=0x10
        SET_FLAGS \fin
        \op     \cnt 0x10(%ebx)
        SAVE_FLAGS \mask
        SAVE_BANK 0x10
.endm

FL_SH1 = FL_CF | FL_OF | FL_SZP
FL_SHN = FL_CF | FL_SZP
FL_RO1 = FL_CF | FL_OF

        GUEST_ENTRY
        EMU_BEGIN
        MMIO32  0x10, 0x80000001
        SH      roll, , 0x2, FL_RO1
        SH      rorl, , 0x2, FL_RO1
        movb    $4, %cl
        SH      "roll %cl,", , 0x2, FL_C
        SH      "rorb $3,", , 0x2, FL_C
        SH      rclw, , 0x3, FL_RO1
        SH      "rcll $5,", , 0x2, FL_C
        SH      rcrb, , 0x3, FL_RO1
        SH      "rcrl %cl,", , 0x3, FL_C
        MMIO32  0x10, 0x40000081
        SH      shll, , 0x2, FL_SH1
        SH      "shll $3,", , 0x2, FL_SHN
        SH      shrb, , 0x2, FL_SH1
        SH      "shrw %cl,", , 0x2, FL_SHN
        MMIO32  0x10, 0x80f0000f
        SH      sarl, , 0x2, FL_SH1
        SH      "sarb $7,", , 0x2, FL_SHN
        SH      "sarl %cl,", , 0x2, FL_SHN
        movb    $0, %cl
        SH      "shll %cl,", , 0x8d5, FL_ALL     # count 0: no flag changes at all
        movb    $33, %cl
        SH      "shrl %cl,", , 0x2, FL_SHN       # count masked to 1
        # SHLD / SHRD with the destination in MMIO
        MMIO32  0x10, 0x12345678
        movl    $0x9abcdef0, %edx
        movb    $8, %cl
        SH      "shldl $4, %edx,", , 0x2, FL_SHN
        SH      "shrdl %cl, %edx,", , 0x2, FL_SHN
        SH      "shldw $1, %dx,", , 0x2, FL_SH1
        SH      "shrdl $1, %edx,", , 0x2, FL_SH1
.if KVMSIM_MODE_LONG64
        MMIO64  0x20, 0x8000000000000001
        FLAGS_CASE 0x2, FL_RO1, rolq 0x20(%rbx)
        movb    $63, %cl
        FLAGS_CASE 0x2, FL_SHN, shrq %cl, 0x20(%rbx)
        FLAGS_CASE 0x2, FL_SH1, sarq $1, 0x20(%rbx)
        movq    $-1, %rdx
        FLAGS_CASE 0x2, FL_SHN, shldq $60, %rdx, 0x20(%rbx)
        FLAGS_CASE 0x3, FL_C, rcrq $2, 0x20(%rbx)
        SAVEQ_BANK 0x20
.endif
        EXIT    0
