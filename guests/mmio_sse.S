# mmio_sse.S — 16-byte SSE moves to and from MMIO (MOVDQU F3 0F 7F, MOVUPS 0F 10).
# GNU as, AT&T.  Modes: prot32 (sets CR4.OSFXSR first), long64.  Regbank at MMIO_BASE with
# +0x10..+0x1f = 00112233 44556677 8899aabb ccddeeff (four dwords).
# Reference §7.3/7.4: at most 8 bytes per KVM_EXIT_MMIO, so each 16-byte move is two exits:
#   #1 mmio write len 8 @+0x00   (RIP already past the MOVDQU)
#   #2 mmio write len 8 @+0x08
#   #3 mmio read  len 8 @+0x10   (RIP at the MOVUPS)
#   #4 mmio read  len 8 @+0x18   → complete_emulated_mmio: NO_DECODE, XMM1 written, RIP past
# The guest stores XMM1 to RAM and checks it: EAX/ECX/EDX/ESI = the four dwords read.
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
.if KVMSIM_MODE_PROT32
        movl    %cr4, %eax
        orl     $0x600, %eax                # OSFXSR | OSXMMEXCPT (long64 boots with them)
        movl    %eax, %cr4
.endif
        movl    $MMIO_BASE, %ebx
        movdqu  pattern, %xmm0
        BYMODE  "movdqu %xmm0, (%rbx)",      "movdqu %xmm0, (%ebx)"
        BYMODE  "movups 0x10(%rbx), %xmm1",  "movups 0x10(%ebx), %xmm1"
        movdqu  %xmm1, result
        movl    result, %eax
        movl    result+4, %ecx
        movl    result+8, %edx
        movl    result+12, %esi
        cmpl    $0x00112233, %eax
        FAIL_IF_NE 1
        cmpl    $0xccddeeff, %esi
        FAIL_IF_NE 2
        movl    $0, %edi
        EXIT    0

        .data
        .balign 16
pattern: .quad  0x0706050403020100, 0x0f0e0d0c0b0a0908
result:  .quad  0, 0
