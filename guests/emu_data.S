# emu_data.S — MOVBE (memory forms only), CMPXCHG8B (and CMPXCHG16B in long64), XLAT, LAHF/SAHF,
# CBW/CWDE/CDQE/CWD/CDQ/CQO, BSWAP (register only: native in the model), MOVZX/MOVSX from MMIO,
# ADC/SBB with CF in and out, ENTER/LEAVE with the stack in RAM and LEAVE's frame in MMIO.
# (MOVBE: guests/emu_movbe.S; CMPXCHG16B on MMIO fails: scenarios/mmio-cmpxchg16b-fails-long64.yaml)
# GNU as, AT&T.  Modes: prot32, long64.
        .include "kvmsim.inc"
        .include "emu.inc"

        GUEST_ENTRY
        EMU_BEGIN
        # CMPXCHG8B: equal (ECX:EBX stored, ZF=1), then not equal (EDX:EAX loaded, ZF=0)
        MMIO64  0x20, 0x1111111122222222
        movl    $MMIO_BASE + 0x20, %esi
        movl    $0x22222222, %eax
        movl    $0x11111111, %edx
        movl    $0x44444444, %ebx
        movl    $0x33333333, %ecx
        cmpxchg8b (%esi)
        SAVE_FLAGS FL_Z
        movl    $0, %eax
        movl    $0, %edx
        cmpxchg8b (%esi)
        movl    %eax, %ecx
        SAVE_FLAGS FL_Z
        SAVE    %ecx, %edx
        movl    $MMIO_BASE, %ebx
        # XLAT: table in MMIO, AL indexes it (upper EAX bits kept)
        MMIO32  0x40, 0x8a7b6c5d
        MMIO32  0x44, 0xf1e2d3c4
        movl    $MMIO_BASE + 0x40, %ebx
        movl    $0xabcd0006, %eax
        xlatb
        movl    $MMIO_BASE, %ebx
        SAVE    %eax
        # LAHF/SAHF with AH from MMIO
        MMIO32  0x48, 0x00009500
        movl    0x48(%ebx), %eax
        sahf                                # SF AF PF CF set, ZF clear
        movl    $0, %eax
        lahf
        SAVE    %eax
        SAVE_FLAGS FL_ALL
        # sign extensions of a value read from MMIO
        MMIO32  0x4c, 0x0000807f
        movl    0x4c(%ebx), %eax
        cbtw
        SAVE    %eax
        movl    0x4c(%ebx), %eax
        shll    $8, %eax
        cwtl
        SAVE    %eax
        movl    0x4c(%ebx), %eax
        shll    $8, %eax
        movl    $0x12345678, %edx
        cwtd
        SAVE    %edx
        movl    0x4c(%ebx), %eax
        shll    $16, %eax
        cltd
        SAVE    %edx
.if KVMSIM_MODE_LONG64
        movl    0x4c(%rbx), %eax
        shll    $16, %eax
        cltq
        SAVEQ   %rax
        cqto
        SAVEQ   %rdx
.endif
        # BSWAP of a value read from MMIO (32, and 64 in long64)
        MMIO32  0x00, 0x11223344
        MMIO64  0x10, 0x0102030405060708
        movl    0x00(%ebx), %ecx
        bswapl  %ecx
        SAVE    %ecx
.if KVMSIM_MODE_LONG64
        movq    0x10(%rbx), %rcx
        bswapq  %rcx
        SAVEQ   %rcx
.endif
        # MOVZX/MOVSX with MMIO sources
        MMIO32  0x50, 0x8081fe7f
        movl    $0xffffffff, %eax
        movzbl  0x50(%ebx), %eax
        SAVE    %eax
        movzwl  0x52(%ebx), %eax
        SAVE    %eax
        movsbl  0x50(%ebx), %eax
        SAVE    %eax
        movsbl  0x53(%ebx), %eax
        SAVE    %eax
        movswl  0x52(%ebx), %eax
        SAVE    %eax
        movl    $0x55555555, %eax
        movsbw  0x51(%ebx), %ax
        SAVE    %eax
        movzbw  0x52(%ebx), %ax
        SAVE    %eax
.if KVMSIM_MODE_LONG64
        movzbq  0x53(%rbx), %rax
        SAVEQ   %rax
        movsbq  0x53(%rbx), %rax
        SAVEQ   %rax
        movswq  0x52(%rbx), %rax
        SAVEQ   %rax
        movslq  0x50(%rbx), %rax
        SAVEQ   %rax
.endif
        # ADC/SBB: CF in, CF (and the rest) out; register and MMIO destinations
        MMIO32  0x58, 0xfffffffe
        MMIO32  0x5c, 0x00000010
        SET_FLAGS 0x3
        movl    $1, %ecx
        adcl    0x58(%ebx), %ecx            # 1 + 0xfffffffe + 1: 0, CF=1 ZF=1
        SAVE    %ecx
        SAVE_FLAGS FL_ALL
        SET_FLAGS 0x2
        movl    $1, %ecx
        adcl    0x58(%ebx), %ecx            # 0xffffffff, CF=0
        SAVE    %ecx
        SAVE_FLAGS FL_ALL
        SET_FLAGS 0x3
        movl    $0x10, %ecx
        sbbl    %ecx, 0x5c(%ebx)            # 0x10 - 0x10 - 1 = -1 in MMIO, CF=1
        SAVE_FLAGS FL_ALL
        SAVE_BANK 0x5c
        SET_FLAGS 0x3
        movb    $0x7f, %cl
        adcb    %cl, 0x58(%ebx)             # 0xfe + 0x7f + 1 = 0x7e, CF=1
        SAVE_FLAGS FL_ALL
        SET_FLAGS 0x2
        movw    $0x8000, %cx
        sbbw    0x5a(%ebx), %cx             # 0x8000 - 0xffff: CF=1 OF=0
        SAVE    %ecx
        SAVE_FLAGS FL_ALL
.if KVMSIM_MODE_LONG64
        MMIO64  0x60, 0x7fffffffffffffff
        SET_FLAGS 0x3
        xorl    %ecx, %ecx
        adcq    0x60(%rbx), %rcx            # 0x8000000000000000: OF=1
        SAVEQ   %rcx
        SAVE_FLAGS FL_ALL
.endif
        # ENTER (stack in RAM), then LEAVE with the frame pointer in MMIO
        BYMODE  "movq %rsp, %r12", "movl %esp, %esi"
        BYMODE  "movq $0x1234, %rbp", "movl $0x1234, %ebp"
        BYMODE  "enterq $0x20, $0", "enterl $0x20, $0"
        BYMODE  "movq %r12, %rax", "movl %esi, %eax"
        BYMODE  "subq %rsp, %rax", "subl %esp, %eax"
        SAVE    %eax                         # ENTER moved the stack down by one slot + 0x20
        BYMODE  "movq (%rbp), %rax", "movl (%ebp), %eax"
        SAVE    %eax                         # the old frame pointer it pushed
        MMIO64  0x70, 0x0000000000004321
        movl    $MMIO_BASE + 0x70, %ebp
        BYMODE  "leaveq", "leavel"
        SAVE    %ebp                         # popped from MMIO
        movl    %esp, %eax
        SAVE    %eax                         # MMIO_BASE + 0x70 + one slot
        BYMODE  "movq %r12, %rsp", "movl %esi, %esp"
        EXIT    0
