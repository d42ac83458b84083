# emu_muldiv.S — MUL/IMUL (1-, 2- and 3-operand)/DIV/IDIV with an MMIO operand.  GNU as,
# AT&T.  Modes: prot32, long64.  MUL/IMUL define only CF and OF; DIV/IDIV define no flags,
# so only their quotient and remainder are stored.
        .include "kvmsim.inc"
        .include "emu.inc"

        GUEST_ENTRY
        EMU_BEGIN
        MMIO32  0x00, 0x80000003
        MMIO32  0x04, 0xfffffffd            # -3
        # MUL
        movl    $0x10, %eax
        SET_FLAGS 0x2
        mulb    0x00(%ebx)                  # AX = 0x10 * 3
        movl    %eax, %esi
        SAVE_FLAGS FL_CO
        SAVE    %esi
        movl    $0x4000, %eax
        movl    $0xdead, %edx
        mulw    0x02(%ebx)                  # DX:AX = 0x4000 * 0x8000
        movl    %eax, %esi
        SAVE_FLAGS FL_CO
        SAVE    %esi, %edx
        movl    $0x7, %eax
        mull    0x00(%ebx)
        movl    %eax, %esi
        SAVE_FLAGS FL_CO
        SAVE    %esi, %edx
        # IMUL one-operand
        movl    $-7, %eax
        imull   0x04(%ebx)                  # -7 * -3
        movl    %eax, %esi
        SAVE_FLAGS FL_CO
        SAVE    %esi, %edx
        movb    $0x80, %al
        imulb   0x04(%ebx)                  # -128 * -3: overflows AL
        movl    %eax, %esi
        SAVE_FLAGS FL_CO
        SAVE    %esi
        # IMUL two- and three-operand
        movl    $0x40000000, %ecx
        imull   0x00(%ebx), %ecx
        SAVE_FLAGS FL_CO
        SAVE    %ecx
        imull   $100, 0x04(%ebx), %edx
        SAVE_FLAGS FL_CO
        SAVE    %edx
        imulw   $0x7fff, 0x00(%ebx), %si
        SAVE_FLAGS FL_CO
        SAVE    %esi
        imull   $-2, 0x00(%ebx), %ebp       # 6B: imm8
        SAVE_FLAGS FL_CO
        SAVE    %ebp
        # DIV / IDIV
        MMIO32  0x08, 7
        MMIO32  0x0c, 0xfffffff9            # -7
        movl    $1000, %eax
        xorl    %edx, %edx
        divl    0x08(%ebx)
        SAVE    %eax, %edx
        movl    $0x0234, %eax
        divb    0x08(%ebx)                  # AL = quotient, AH = remainder
        SAVE    %eax
        movl    $0xffff, %eax
        movl    $0x6, %edx
        divw    0x08(%ebx)                  # DX:AX = 0x6ffff
        SAVE    %eax, %edx
        movl    $-1000, %eax
        cltd
        idivl   0x0c(%ebx)
        SAVE    %eax, %edx
        movw    $-100, %ax
        idivb   0x0c(%ebx)
        SAVE    %eax
.if KVMSIM_MODE_LONG64
        MMIO64  0x10, 0x100000001
        movabsq $0x123456789, %rax
        mulq    0x10(%rbx)
        movq    %rax, %rsi
        SAVE_FLAGS FL_CO
        SAVEQ   %rsi, %rdx
        movq    $-3, %rax
        imulq   0x10(%rbx)
        movq    %rax, %rsi
        SAVE_FLAGS FL_CO
        SAVEQ   %rsi, %rdx
        movabsq $0x7fffffffffffffff, %rcx
        imulq   0x10(%rbx), %rcx
        SAVE_FLAGS FL_CO
        SAVEQ   %rcx
        movabsq $0x123456789abcdef0, %rax
        movq    $0x5, %rdx
        divq    0x10(%rbx)
        SAVEQ   %rax, %rdx
        movq    $-1000000000000, %rax
        cqto
        idivq   0x10(%rbx)
        SAVEQ   %rax, %rdx
.endif
        EXIT    0
