# emu_mov.S — MOV (incl. moffs and imm forms), MOVZX/MOVSX, MOVSXD, CMOVcc, XCHG, XADD,
# CMPXCHG, CMPXCHG8B with an MMIO operand.  GNU as, AT&T.  Modes: prot32, long64.
# Results (registers, the bank afterwards, ZF/CF where defined) go to the RESULTS table.
        .include "kvmsim.inc"
        .include "emu.inc"

        GUEST_ENTRY
        EMU_BEGIN
        # MOV r/m <-> reg, all sizes; MOV r/m, imm (C6/C7)
        MMIO32  0x00, 0x89abcdef
        movb    0x01(%ebx), %cl
        movw    0x02(%ebx), %dx
        movl    0x00(%ebx), %esi
        SAVE    %ecx, %edx, %esi
        movb    %cl, 0x08(%ebx)
        movw    %dx, 0x0a(%ebx)
        movw    $0x1234, 0x0c(%ebx)
        movb    $0x56, 0x0e(%ebx)
        movb    $0x78, 0x0f(%ebx)
        SAVE_BANK 0x08, 0x0c
        # MOV moffs (A0-A3)
.if KVMSIM_MODE_LONG64
        movabsl MMIO_BASE, %eax
        SAVE    %eax
        movl    $0xa3a3a3a3, %eax
        movabsl %eax, MMIO_BASE + 0x14
        movabsb MMIO_BASE + 0x03, %al
.else
        movl    MMIO_BASE, %eax
        SAVE    %eax
        movl    $0xa3a3a3a3, %eax
        movl    %eax, MMIO_BASE + 0x14
        movb    MMIO_BASE + 0x03, %al
.endif
        SAVE    %eax
        SAVE_BANK 0x14
        # MOVZX / MOVSX
        MMIO32  0x18, 0x8081f0ff
        movzbl  0x18(%ebx), %ecx
        movzwl  0x18(%ebx), %edx
        movsbl  0x19(%ebx), %esi
        movswl  0x1a(%ebx), %ebp
        movsbw  0x18(%ebx), %ax
        SAVE    %ecx, %edx, %esi, %ebp, %eax
.if KVMSIM_MODE_LONG64
        movsbq  0x19(%rbx), %rcx
        movswq  0x1a(%rbx), %rdx
        movslq  0x18(%rbx), %rsi            # MOVSXD
        movzbq  0x1b(%rbx), %rbp
        SAVEQ   %rcx, %rdx, %rsi, %rbp
        MMIO64  0x20, 0x0123456789abcdef
        movq    0x20(%rbx), %rcx
        SAVEQ   %rcx
        movq    $-5, %rdx
        movq    %rdx, 0x28(%rbx)
        movq    $0x7fffffff, 0x30(%rbx)     # C7 imm32 sign-extended
        SAVEQ_BANK 0x28, 0x30
.endif
        # CMOVcc: taken and not taken (a not-taken CMOV still reads its source)
        MMIO32  0x38, 0x11111111
        movl    $0x22222222, %ecx
        movl    $0x33333333, %edx
        SET_FLAGS 0x41                      # ZF CF
        cmovel  0x38(%ebx), %ecx
        cmovnel 0x38(%ebx), %edx
        cmovbw  0x38(%ebx), %si
        cmoval  0x38(%ebx), %ebp
        SAVE    %ecx, %edx, %esi, %ebp
        # XCHG (implicitly locked), XADD, CMPXCHG
        MMIO32  0x40, 0xaaaaaaaa
        movl    $0x55555555, %ecx
        xchgl   %ecx, 0x40(%ebx)
        SAVE    %ecx
        movb    $0x01, %dl
        xchgb   0x41(%ebx), %dl
        SAVE    %edx
        SAVE_BANK 0x40
        MMIO32  0x44, 0x7fffffff
        movl    $1, %ecx
        FLAGS_CASE 0x2, FL_ALL, xaddl %ecx, 0x44(%ebx)
        SAVE    %ecx
        movw    $0xffff, %dx
        FLAGS_CASE 0x2, FL_ALL, lock xaddw %dx, 0x44(%ebx)
        SAVE    %edx
        SAVE_BANK 0x44
        MMIO32  0x48, 0x1000
        movl    $0x1000, %eax               # equal: store ECX
        movl    $0x2000, %ecx
        FLAGS_CASE 0x2, FL_ALL, cmpxchgl %ecx, 0x48(%ebx)
        SAVE    %eax
        movl    $0x1000, %eax               # not equal: EAX = memory
        movl    $0x3000, %ecx
        SET_FLAGS 0x2
        lock cmpxchgl %ecx, 0x48(%ebx)
        movl    %eax, %esi
        SAVE_FLAGS FL_ALL
        SAVE    %esi
        movb    $0x00, %al
        movb    $0x7f, %cl
        lock cmpxchgb %cl, 0x48(%ebx)
        movl    %eax, %esi
        SAVE_FLAGS FL_ALL
        SAVE    %esi
        SAVE_BANK 0x48
        # CMPXCHG8B: equal, then not equal
        MMIO64  0x50, 0x1111111122222222
        movl    $0x22222222, %eax
        movl    $0x11111111, %edx
        movl    $0x44444444, %ebx
        movl    $0x33333333, %ecx
        movl    $MMIO_BASE, %esi
        SET_FLAGS 0x2
        BYMODE  "cmpxchg8b 0x50(%rsi)", "cmpxchg8b 0x50(%esi)"
        movl    %eax, %ebp
        SAVE_FLAGS FL_Z
        SAVE    %ebp
        movl    $MMIO_BASE, %ebx
        SET_FLAGS 0x2
        BYMODE  "lock cmpxchg8b 0x50(%rsi)", "lock cmpxchg8b 0x50(%esi)"
        movl    %eax, %ebp
        SAVE_FLAGS FL_Z
        SAVE    %ebp, %edx
        SAVE_BANK 0x50, 0x54
        EXIT    0
