# emu_misc.S — LEA (no memory access), CBW/CWDE/CDQE and CWD/CDQ/CQO, the flag
# instructions (CLC/STC/CMC/CLD/STD, LAHF/SAHF, PUSHF/POPF with the image in MMIO), XLAT and
# BSWAP/MOVBE-free register ops fed from MMIO.  GNU as, AT&T.  Modes: prot32, long64.
        .include "kvmsim.inc"
        .include "emu.inc"

        GUEST_ENTRY
        EMU_BEGIN
        # LEA: address arithmetic only (no MMIO access)
        movl    $0x1000, %ecx
        movl    $0x20, %edx
        leal    0x7(%ecx,%edx,4), %esi
        SAVE    %esi
        leaw    -2(%ecx,%edx,8), %si
        SAVE    %esi
.if KVMSIM_MODE_LONG64
        movabsq $0xfffffffffffffff0, %rcx
        leaq    0x20(%rcx,%rdx,2), %rsi
        SAVEQ   %rsi
        leal    0x20(%rcx,%rdx,2), %esi
        SAVEQ   %rsi
        leaq    leafsym(%rip), %rsi
        SAVEQ   %rsi
.endif
        # sign extension, with the value loaded from MMIO
        MMIO32  0x00, 0x80ff8081
        movl    0x00(%ebx), %eax
        cbtw
        SAVE    %eax
        movl    0x00(%ebx), %eax
        cwtl
        SAVE    %eax
        movl    0x00(%ebx), %eax
        movl    $0x5555, %edx
        cwtd
        SAVE    %eax, %edx
        movl    0x00(%ebx), %eax
        cltd
        SAVE    %edx
.if KVMSIM_MODE_LONG64
        movl    0x00(%rbx), %eax
        cltq
        SAVEQ   %rax
        movq    0x00(%rbx), %rax
        cqto
        SAVEQ   %rdx
.endif
        # flag instructions
        FLAGS_CASE 0x2, FL_ALL, stc
        cmc
        SAVE_FLAGS FL_ALL
        stc
        clc
        SAVE_FLAGS FL_ALL
        std
        SAVE_FLAGS 0x400
        cld
        SAVE_FLAGS 0x400
        MMIO32  0x10, 0xd7
        movb    0x10(%ebx), %ah
        sahf
        SAVE_FLAGS FL_ALL
        SET_FLAGS 0x8c5
        movl    $0, %eax
        lahf
        SAVE    %eax
        # POPF from MMIO, PUSHF to MMIO (the stack pointed at the bank)
        BYMODE  "movq %rsp, %rbp", "movl %esp, %ebp"
        MMIO32  0x20, 0x8d7
        MMIO32  0x24, 0
        movl    $MMIO_BASE + 0x20, %esp
        BYMODE  "popfq", "popfl"
        BYMODE  "pushfq", "pushfl"
        BYMODE  "movq %rbp, %rsp", "movl %ebp, %esp"
        movl    0x20(%ebx), %eax
        andl    $0xfff, %eax
        SAVE    %eax
        SET_FLAGS 0x2
        # XLAT with the table in MMIO
        MMIO32  0x30, 0x44332211
        movl    $MMIO_BASE + 0x30, %ebx
        movl    $2, %eax
        xlatb
        movl    $MMIO_BASE, %ebx
        SAVE    %eax
        # BSWAP of an MMIO-loaded value, and MOV to/from a segment register via MMIO
        movl    0x30(%ebx), %ecx
        bswapl  %ecx
        SAVE    %ecx
        MMIO32  0x34, KVMSIM_KERNEL_DS
        movw    0x34(%ebx), %es
        movw    %es, 0x38(%ebx)
        SAVE_BANK 0x38
        EXIT    0
leafsym:
        .long   0
