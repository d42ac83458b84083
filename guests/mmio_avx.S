# mmio_avx.S — VMOVDQU (VEX.128 F3 0F 6F) from MMIO.  GNU as, AT&T.  Modes: prot32, long64.
# The guest turns on CR4.OSXSAVE and XCR0 = x87|SSE|AVX (XSETBV exits), then loads 16
# bytes from the regbank (+0x0..+0xf = 00112233 44556677 8899aabb ccddeeff).
# An emulator without VEX moves (upstream through v6.18) fails to decode it: at CPL0,
# handle_emulation_failure queues #UD and exits KVM_EXIT_INTERNAL_ERROR / EMULATION with
# the instruction bytes (reference §6.4).  With `kvm: {emulator: {vex_moves: true}}` the
# load completes like MOVDQU: two 8-byte reads, NO_DECODE, and the guest checks XMM0.
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        BYMODE  "movq %cr4, %rax",  "movl %cr4, %eax"
        orl     $0x40600, %eax              # OSXSAVE | OSFXSR | OSXMMEXCPT
        BYMODE  "movq %rax, %cr4",  "movl %eax, %cr4"
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        movl    $7, %eax                    # XCR0 = x87 | SSE | AVX
        xsetbv
        movl    $MMIO_BASE, %ebx
        BYMODE  "vmovdqu (%rbx), %xmm0",   "vmovdqu (%ebx), %xmm0"
        movdqu  %xmm0, result
        movl    result, %eax
        movl    result+12, %esi
        cmpl    $0x00112233, %eax
        FAIL_IF_NE 1
        cmpl    $0xccddeeff, %esi
        FAIL_IF_NE 2
        EXIT    0

        .data
        .balign 16
result: .quad   0, 0
