# serial_hello.S — "Hello from <mode>\n" on the 16550 at 0x3f8, then EXIT 0.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64 (one source; KVMSIM_MODE_* picks the text).
#
# Exits (per byte): IN 0x3fd (LSR poll, THRE set) then OUT 0x3f8; finally a 32-bit OUT 0xf4 = 0.
# Expect: serial "Hello from <mode>\n", stop debug-exit code 0.

        .include "kvmsim.inc"

        GUEST_ENTRY
        SERIAL_PUTS hello
        EXIT    0

        .section .rodata
hello:
.if KVMSIM_MODE_REAL16
        .asciz  "Hello from real16\n"
.elseif KVMSIM_MODE_PROT32
        .asciz  "Hello from prot32\n"
.else
        .asciz  "Hello from long64\n"
.endif
