# undefined_flags.S — the guest's last flag-writing instruction leaves status flags undefined (SDM),
# so the final RFLAGS may differ between CPUs (and KVM's emulator) without either being wrong.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# LAST_WRITER (defsym) picks the last instruction to write the flags before EXIT:
#     1  shrl $16, %eax      AF undefined (count > 1: OF too)
#     2  divl %ecx           CF PF AF ZF SF OF undefined
# Exits: serial I/O, then a 32-bit OUT 0xf4 = 0 (EXIT's MOV and OUT leave the flags alone).
# Expect: serial "undefined flags\n", stop debug-exit code 0; `kvmsim diff` MATCHes, naming any
#         differing undefined flag in a "labelled: rflags ... undefined after shr|div (SDM)" line.

        .include "kvmsim.inc"

.ifndef LAST_WRITER
LAST_WRITER = 1
.endif

        GUEST_ENTRY
        SERIAL_PRINT "undefined flags\n"
        movl    $0x12345678, %eax
.if LAST_WRITER == 1
        shrl    $16, %eax
.else
        xorl    %edx, %edx
        movl    $7, %ecx
        divl    %ecx
.endif
        movl    %eax, %ebx              # the result stays visible in the final registers
        EXIT    0
