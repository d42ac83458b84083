# emu_alu.S — ADD/ADC/SUB/SBB/AND/OR/XOR/CMP/TEST/INC/DEC/NEG/NOT with an MMIO operand.
# GNU as, AT&T.  Modes: prot32, long64.  Each instruction reads (and, unless it is CMP or
# TEST, writes) the register bank; results and the defined flags go to the RESULTS table.
# Flags: the arithmetic group defines all six; AND/OR/XOR/TEST leave AF undefined; INC/DEC
# keep CF; NOT changes none.
        .include "kvmsim.inc"
        .include "emu.inc"

# ALU_MR op, size-suffix, reg, val-in-mmio, reg-init, flags-in: op reg, (mmio)  (dst memory)
.macro ALU_MR op, reg, mval, rval, fin, mask
        MMIO32  0x10, \mval
        movl    $(\rval), \reg
        SET_FLAGS \fin
        \op     \reg, 0x10(%ebx)
        SAVE_FLAGS \mask
        SAVE_BANK 0x10
.endm

# ALU_RM: op (mmio), reg  (dst register)
.macro ALU_RM op, reg, mval, rval, fin, mask
        MMIO32  0x20, \mval
        movl    $(\rval), \reg
        SET_FLAGS \fin
        \op     0x20(%ebx), \reg
        SAVE_FLAGS \mask
        SAVE    \reg
.endm

        GUEST_ENTRY
        EMU_BEGIN
        # 32-bit, memory destination and register destination
        ALU_MR  addl, %ecx, 0x7fffffff, 1, 0x2, FL_ALL
        ALU_MR  addl, %ecx, 0xffffffff, 1, 0x2, FL_ALL
        ALU_RM  addl, %edx, 0x80000000, 0x80000000, 0x2, FL_ALL
        ALU_MR  adcl, %ecx, 0xfffffffe, 1, 0x3, FL_ALL
        ALU_RM  adcl, %edx, 0x0000000f, 0x1, 0x3, FL_ALL
        ALU_MR  subl, %ecx, 0x80000000, 1, 0x2, FL_ALL
        ALU_RM  subl, %edx, 5, 3, 0x2, FL_ALL
        ALU_MR  sbbl, %ecx, 0, 0, 0x3, FL_ALL
        ALU_RM  sbbl, %edx, 0x10, 0x10, 0x3, FL_ALL
        ALU_MR  andl, %ecx, 0xf0f0f0f0, 0x0ff00ff0, 0x2, FL_LOGIC
        ALU_RM  andl, %edx, 0xf0f0f0f0, 0x0f0f0f0f, 0x2, FL_LOGIC
        ALU_MR  orl,  %ecx, 0x80000000, 0x00000001, 0x2, FL_LOGIC
        ALU_RM  orl,  %edx, 0, 0, 0x8d5, FL_LOGIC
        ALU_MR  xorl, %ecx, 0x12345678, 0x12345678, 0x2, FL_LOGIC
        ALU_RM  xorl, %edx, 0xffff0000, 0x0000ffff, 0x2, FL_LOGIC
        ALU_RM  cmpl, %edx, 0x10, 0x0f, 0x2, FL_ALL
        ALU_MR  cmpl, %ecx, 0x80000000, 1, 0x2, FL_ALL
        ALU_MR  testl, %ecx, 0x80000001, 0x80000000, 0x2, FL_LOGIC
        # 8- and 16-bit forms
        MMIO32  0x30, 0x11223344
        movb    $0x7f, %cl
        FLAGS_CASE 0x2, FL_ALL, addb %cl, 0x30(%ebx)    # 0x44 + 0x7f
        movw    $0x8000, %dx
        FLAGS_CASE 0x2, FL_ALL, subw %dx, 0x32(%ebx)    # 0x1122 - 0x8000
        SAVE_BANK 0x30
        FLAGS_CASE 0x2, FL_ALL, addb $0x80, 0x31(%ebx)  # group1 imm8 byte
        FLAGS_CASE 0x3, FL_ALL, sbbw $0x1234, 0x30(%ebx)  # group1 imm16
        FLAGS_CASE 0x2, FL_LOGIC, orl $-2, 0x34(%ebx)   # group1 imm8 sign-extended
        FLAGS_CASE 0x2, FL_LOGIC, xorw $0x5a5a, 0x36(%ebx)
        SAVE_BANK 0x30, 0x34
        # INC/DEC/NEG/NOT on memory
        MMIO32  0x40, 0x7fffffff
        FLAGS_CASE 0x3, FL_ALL, incl 0x40(%ebx)
        FLAGS_CASE 0x2, FL_ALL, decb 0x40(%ebx)
        FLAGS_CASE 0x2, FL_ALL, negw 0x42(%ebx)
        FLAGS_CASE 0x8d5, FL_ALL, notl 0x40(%ebx)
        SAVE_BANK 0x40
        MMIO32  0x44, 0
        FLAGS_CASE 0x2, FL_ALL, negl 0x44(%ebx)
        FLAGS_CASE 0x2, FL_ALL, incw 0x46(%ebx)
        SAVE_BANK 0x44
        # accumulator forms and LOCK (memory destination)
        MMIO32  0x48, 100
        movl    $7, %ecx
        FLAGS_CASE 0x2, FL_ALL, lock addl %ecx, 0x48(%ebx)
        FLAGS_CASE 0x2, FL_ALL, lock decl 0x48(%ebx)
        SAVE_BANK 0x48
.if KVMSIM_MODE_LONG64
        # 64-bit operand size (REX.W)
        MMIO64  0x50, 0x7fffffffffffffff
        movq    $1, %rcx
        FLAGS_CASE 0x2, FL_ALL, addq %rcx, 0x50(%rbx)
        FLAGS_CASE 0x3, FL_ALL, sbbq $-1, 0x50(%rbx)
        movq    0x50(%rbx), %rdx
        SAVEQ   %rdx
        FLAGS_CASE 0x2, FL_LOGIC, andq 0x50(%rbx), %rdx
        SAVEQ   %rdx
        FLAGS_CASE 0x2, FL_ALL, negq 0x50(%rbx)
        SET_FLAGS 0x2
        notq    0x50(%rbx)
        cmpq    0x50(%rbx), %rdx
        SAVE_FLAGS FL_ALL
        movq    0x50(%rbx), %rdx
        SAVEQ   %rdx
.endif
        EXIT    0
