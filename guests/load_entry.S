# load_entry.S — a guest loaded at the address the scenario gives (guest.load) and entered at a
# symbol other than _start (guest.entry).  GNU as, AT&T syntax.  Modes: prot32, long64.
#
# _start fails at once (EXIT 0xbad): reaching it means guest.entry was ignored.  `alt_entry`
# compares where it runs (CALL/POP) with where it was linked: ESI = run-time minus link-time
# address of label 1 (0 when the image is loaded where it is linked), EDI = the link address
# of alt_entry (the scenario's load address plus its offset), then prints and exits with 0.
# Exits: serial I/O, then OUT 0xf4.

        .include "kvmsim.inc"

        GUEST_ENTRY
        EXIT    0xbad

        .globl  alt_entry
alt_entry:
        call    1f
1:
.if KVMSIM_MODE_LONG64
        popq    %rsi
.else
        popl    %esi
.endif
        subl    $1b, %esi
        movl    $alt_entry, %edi
        SERIAL_PRINT "entered at alt_entry, linked at "
        movl    %edi, %eax
        call    serial_puthex
        SERIAL_PRINT "\n"
        EXIT    0
