# native_loop.S — benchmark: N iterations of ALU work with no VM exits, then EXIT 0.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# N is ECX at entry if non-zero, else NATIVE_LOOP_COUNT (guest.defsym, default 10,000,000).
# 4 instructions per iteration (add, xor, dec, jnz), so about 4*N guest instructions.
# Registers at EXIT: ebx = checksum (for N iterations: eax_i = 3*i, ebx ^= eax_i),
# esi = 3*N (eax before EXIT clobbers it), ecx = 0.
# Exits: only the final OUT 0xf4 = 0.

        .include "kvmsim.inc"

.ifndef NATIVE_LOOP_COUNT
NATIVE_LOOP_COUNT = 10000000
.endif

        GUEST_ENTRY
        testl   %ecx, %ecx
        jnz     1f
        movl    $NATIVE_LOOP_COUNT, %ecx
1:      xorl    %eax, %eax
        xorl    %ebx, %ebx
native_loop:
        addl    $3, %eax
        xorl    %eax, %ebx
        decl    %ecx
        jnz     native_loop
        movl    %eax, %esi
        EXIT    0
