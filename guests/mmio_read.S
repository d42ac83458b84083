# mmio_read.S — two 4-byte MMIO reads of one page.  GNU as, AT&T.  Modes: prot32, long64.
# The first read is an EPT violation, the second an EPT misconfig (MMIO SPTE cached); each
# exits to userspace with RIP still at the instruction and completes with EMULTYPE_NO_DECODE.
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        movl    $MMIO_BASE, %ebx
        BYMODE  "movl (%rbx), %edx",   "movl (%ebx), %edx"     # → 0x1234
        BYMODE  "movl 4(%rbx), %ecx",  "movl 4(%ebx), %ecx"    # → 0xcafe
        EXIT    0
