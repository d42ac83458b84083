# rep_movs_mmio.S — REP MOVS between RAM and MMIO.  GNU as, AT&T.  Modes: prot32, long64.
# Regbank at MMIO_BASE.  Reference §9.7 step 10 and §6.3 step 11:
#   RAM→MMIO rep movsb x8: each iteration's write exits to userspace before the REP restart
#     can loop (mmio_needed wins), with RIP still at the instruction, so the guest re-executes
#     it: 8 VM exits (EPT violation, then misconfig), 8 EMULTYPE_PF, 8 writes of len 1.
#   MMIO→RAM rep movsb x8: one EPT misconfig, one PF, then per byte a read exit and a
#     NO_DECODE re-entry that writes RAM and restarts in the kernel (RCX & 0x3ff != 0).
#   MMIO→RAM rep movsl x4: as above with 4-byte reads.
# Final (movsl): RSI = MMIO_BASE+0x110, RDI = dst2+16, RCX = 0.
        .include "kvmsim.inc"
        .include "mmio.inc"

DST  = 0x120000
DST2 = 0x121000

        GUEST_ENTRY
        cld
        BYMODE  "movq $src, %rsi",            "movl $src, %esi"
        BYMODE  "movq $(MMIO_BASE+0x100), %rdi", "movl $(MMIO_BASE+0x100), %edi"
        movl    $8, %ecx
        rep movsb                           # RAM → MMIO
        BYMODE  "movq $(MMIO_BASE+0x100), %rsi", "movl $(MMIO_BASE+0x100), %esi"
        BYMODE  "movq $DST, %rdi",            "movl $DST, %edi"
        movl    $8, %ecx
        rep movsb                           # MMIO → RAM
        BYMODE  "movq $src, %rsi",            "movl $src, %esi"
        BYMODE  "movq $DST, %rdi",            "movl $DST, %edi"
        movl    $8, %ecx
        repe cmpsb                          # RAM vs RAM, native: the bytes made the round trip
        FAIL_IF_NE 1
        BYMODE  "movq $(MMIO_BASE+0x100), %rsi", "movl $(MMIO_BASE+0x100), %esi"
        BYMODE  "movq $DST2, %rdi",           "movl $DST2, %edi"
        movl    $4, %ecx
        rep movsl                           # MMIO → RAM, 4 bytes a time
        EXIT    0

        .data
src:    .byte   0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87
