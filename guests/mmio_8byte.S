# mmio_8byte.S — 8-byte MMIO write and read: one KVM_EXIT_MMIO of len 8 each.
# GNU as, AT&T.  Modes: prot32 (MMX MOVQ, 0F 7F / 0F 6F), long64 (MOV r64, 89 / 8B).
# The regbank holds 0x1122334455667788 at +0x8 (two 4-byte values).
#   #1 mmio write len 8 @+0x0 data efcdab8967452301
#   #2 mmio read  len 8 @+0x8 data 8877665544332211
# Result: long64 RDX = 0x1122334455667788; prot32 EDX:EAX = 0x11223344:0x55667788.
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        movl    $MMIO_BASE, %ebx
.if KVMSIM_MODE_LONG64
        movabsq $0x0123456789abcdef, %rax
        movq    %rax, (%rbx)
        movq    8(%rbx), %rdx
        movabsq $0x1122334455667788, %rcx
        cmpq    %rcx, %rdx
        FAIL_IF_NE 1
        xorl    %eax, %eax
        xorl    %ecx, %ecx
.else
        movl    $0x89abcdef, value
        movl    $0x01234567, value+4
        movq    value, %mm0
        movq    %mm0, (%ebx)
        movq    8(%ebx), %mm1
        movq    %mm1, value
        movl    value, %eax
        movl    value+4, %edx
        cmpl    $0x55667788, %eax
        FAIL_IF_NE 1
        cmpl    $0x11223344, %edx
        FAIL_IF_NE 2
.endif
        EXIT    0

        .data
        .balign 8
value:  .quad   0
