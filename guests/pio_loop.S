# pio_loop.S — benchmark: OUT to port 0x80 N times, then EXIT 0.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# N is ECX at entry if non-zero (the caller sets it after boot, which zeroes GPRs), else
# PIO_LOOP_COUNT (guest.defsym, default 100000).  Each OUT writes the low byte of the
# remaining count (an 8-bit OUT, IO_INSTRUCTION exit -> kvm_fast_pio -> userspace unless a
# device or an ioeventfd claims port 0x80).
# Exits: N x IO_INSTRUCTION (out, port 0x80, size 1), then OUT 0xf4 = 0.  ECX = 0 at EXIT.

        .include "kvmsim.inc"

.ifndef PIO_LOOP_COUNT
PIO_LOOP_COUNT = 100000
.endif

        GUEST_ENTRY
        testl   %ecx, %ecx
        jnz     pio_loop
        movl    $PIO_LOOP_COUNT, %ecx
pio_loop:
        movb    %cl, %al
        outb    %al, $0x80
        decl    %ecx
        jnz     pio_loop
        EXIT    0
