# emu_sse.S — the SSE/MMX moves KVM's emulator has: MOVUPS/MOVUPD, MOVAPS/MOVAPD, MOVDQA,
# MOVDQU, MOVNTPS/MOVNTDQ (stores), MMX MOVQ, with the memory operand in MMIO (16-byte
# accesses are two 8-byte exits).  GNU as, AT&T.  Modes: prot32, long64.  prot32 enables
# CR4.OSFXSR first (long64 boots with it).
        .include "kvmsim.inc"
        .include "emu.inc"

.macro SAVEX xmms:vararg
.irp xmm, \xmms
        movdqu  \xmm, (%edi)
        addl    $16, %edi
.endr
.endm

        GUEST_ENTRY
        EMU_BEGIN
        BYMODE  "movq %cr4, %rax", "movl %cr4, %eax"
        orl     $0x600, %eax                # OSFXSR | OSXMMEXCPT
        BYMODE  "movq %rax, %cr4", "movl %eax, %cr4"
        BYMODE  "movq %cr0, %rax", "movl %cr0, %eax"
        andl    $~0xc, %eax                 # EM=0 TS=0
        orl     $0x2, %eax                  # MP
        BYMODE  "movq %rax, %cr0", "movl %eax, %cr0"
        MMIO64  0x00, 0x0706050403020100
        MMIO64  0x08, 0x0f0e0d0c0b0a0908
        MMIO64  0x10, 0x1716151413121110
        MMIO64  0x18, 0x1f1e1d1c1b1a1918
        movups  0x00(%ebx), %xmm0
        movupd  0x08(%ebx), %xmm1
        movaps  0x10(%ebx), %xmm2
        movdqa  0x00(%ebx), %xmm3
        movdqu  0x04(%ebx), %xmm4
        movapd  0x10(%ebx), %xmm5
        SAVEX   %xmm0, %xmm1, %xmm2, %xmm3, %xmm4, %xmm5
        movdqu  ones, %xmm6                 # (kvm_pvm emulates every CPL0 instruction:
        movups  %xmm6, 0x20(%ebx)           #  only moves here, no SSE arithmetic)
        movdqa  pattern, %xmm6
        movaps  %xmm6, 0x30(%ebx)
        movdqu  %xmm3, 0x41(%ebx)
        movdqa  %xmm2, 0x60(%ebx)
        movntps %xmm1, 0x70(%ebx)
        movntdq %xmm0, 0x80(%ebx)
        movupd  %xmm5, 0x90(%ebx)
        movapd  %xmm4, 0xa0(%ebx)
        # MMX MOVQ both ways
        movq    0x08(%ebx), %mm0
        movq    %mm0, 0xb0(%ebx)
        movq    %mm0, (%edi)
        addl    $8, %edi
        # read everything written back through a plain load
        movl    $0x20, %esi
1:      movl    (%esi,%ebx), %eax
        SAVE    %eax
        addl    $4, %esi
        cmpl    $0xb8, %esi
        jne     1b
        EXIT    0

        .data
        .balign 16
ones:    .quad  -1, -1
pattern: .quad  0x5a5aa5a5c3c33c3c, 0x0123456789abcdef
