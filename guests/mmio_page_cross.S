# mmio_page_cross.S — accesses that cross a page boundary are split into one MMIO fragment
# per page (reference §7.3 step 3): each fragment is its own KVM_EXIT_MMIO.
# GNU as, AT&T.  Modes: prot32, long64.
# Devices: regbank "bank" at 0xd0000000 size 0x2000 (both pages MMIO), regbank "edge" at
# 0x200000 (the page right after the 2 MiB RAM slot).
#   MMIO→MMIO 4-byte write at 0xd0000ffe:  write 2 @0xd0000ffe, write 2 @0xd0001000
#   MMIO→MMIO 4-byte read  at 0xd0000ffe:  read 2, read 2, then NO_DECODE → EDX = 0xaabbccdd
#   MMIO→MMIO 8-byte write at 0xd0000ffd: write 3 @0xd0000ffd, write 5 @0xd0001000
#   RAM→MMIO  4-byte write at 0x1ffffe:   RAM gets dd cc, write 2 @0x200000 (bb aa)
#   RAM→MMIO  4-byte read  at 0x1ffffe:   read 2 @0x200000 → ESI = 0xaabbccdd
        .include "kvmsim.inc"
        .include "mmio.inc"

RAM_EDGE = 0x1ffffe

        GUEST_ENTRY
        movl    $MMIO_BASE, %ebx
        movl    $0xaabbccdd, %ecx
        BYMODE  "movl %ecx, 0xffe(%rbx)",  "movl %ecx, 0xffe(%ebx)"
        BYMODE  "movl 0xffe(%rbx), %edx",  "movl 0xffe(%ebx), %edx"
        cmpl    %ecx, %edx
        FAIL_IF_NE 1
.if KVMSIM_MODE_LONG64
        movabsq $0x1122334455667788, %rax
        movq    %rax, 0xffd(%rbx)
.else
        movq    qword, %mm0
        movq    %mm0, 0xffd(%ebx)
.endif
        movl    %ecx, RAM_EDGE
        movl    RAM_EDGE, %esi
        cmpl    %ecx, %esi
        FAIL_IF_NE 2
        EXIT    0

        .data
        .balign 8
qword:  .quad   0x1122334455667788
