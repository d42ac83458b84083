# coalesced_mmio.S — writes into a coalesced-MMIO zone go to the ring without leaving
# KVM_RUN; a read from the zone exits as usual, and the VMM drains the ring before it
# answers, so the read sees the last write.  GNU as, AT&T.  Modes: prot32, long64.
# Zone and regbank at MMIO_BASE.  Each write: EPT violation/misconfig → EMULTYPE_PF →
# write_emulated → KVM_MMIO_BUS → coalesced_mmio_write (in the kernel, no exit).
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        movl    $MMIO_BASE, %ebx
        BYMODE  "movl $0x11111111, (%rbx)",   "movl $0x11111111, (%ebx)"
        BYMODE  "movl $0x22222222, 4(%rbx)",  "movl $0x22222222, 4(%ebx)"
        BYMODE  "movw $0x3333, 8(%rbx)",      "movw $0x3333, 8(%ebx)"
        BYMODE  "movl $0x44444444, 4(%rbx)",  "movl $0x44444444, 4(%ebx)"
        BYMODE  "movl 4(%rbx), %edx",         "movl 4(%ebx), %edx"     # KVM_EXIT_MMIO read
        cmpl    $0x44444444, %edx
        FAIL_IF_NE 1
        EXIT    0
