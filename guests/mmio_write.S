# mmio_write.S — MMIO writes of 1, 2 and 4 bytes, a read-modify-write, and a read back.
# GNU as, AT&T syntax.  Modes: prot32, long64.  A regbank at MMIO_BASE (0xd0000000) with
# 0x8 = 0x5a.  Reference §7.3/§7.4: a write exits with the instruction already retired
# (RIP past it); an RMW reads first (IO_NEEDED, NO_DECODE re-entry) and then writes.
#
#   #1 mmio write len 1 @+0x0 data 11           (EPT violation: first touch of the page)
#   #2 mmio write len 2 @+0x2 data 3322         (EPT misconfig from here on: MMIO SPTE cached)
#   #3 mmio write len 4 @+0x4 data 77665544
#   #4 mmio read  len 4 @+0x8 data 5a000000     orl $0x100, 8(base): read ...
#   #5 mmio write len 4 @+0x8 data 5a010000     ... then write, after NO_DECODE
#   #6 mmio read  len 4 @+0x4 data 77665544     read back what #3 wrote: EDX = 0x44556677
#   #7 io out 0xf4 (EXIT 0)
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        movl    $MMIO_BASE, %ebx
        movl    $0x44556677, %ecx
        BYMODE  "movb $0x11, (%rbx)",      "movb $0x11, (%ebx)"
        BYMODE  "movw $0x2233, 2(%rbx)",   "movw $0x2233, 2(%ebx)"
        BYMODE  "movl %ecx, 4(%rbx)",      "movl %ecx, 4(%ebx)"
        BYMODE  "orl $0x100, 8(%rbx)",     "orl $0x100, 8(%ebx)"
        setnz   %al                         # flags come from the emulated OR: ZF=0
        movzbl  %al, %esi                   # ESI = 1
        BYMODE  "movl 4(%rbx), %edx",      "movl 4(%ebx), %edx"
        cmpl    %ecx, %edx
        FAIL_IF_NE 1
        EXIT    0
