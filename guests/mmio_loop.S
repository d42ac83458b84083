# mmio_loop.S — benchmark: N 32-bit reads from GPA 0xd0000000 (no memslot: MMIO), then EXIT 0.
# GNU as, AT&T syntax.  Mode: long64 (the identity map covers 0xd0000000).
#
# N is ECX at entry if non-zero (the caller sets it after boot, which zeroes GPRs), else
# MMIO_LOOP_COUNT (guest.defsym, default 100000).  Each read exits: EPT violation (first
# touch) or EPT misconfig -> x86_emulate_instruction(EMULTYPE_PF) -> KVM_EXIT_MMIO (len 4,
# is_write 0) -> the VMM's device fills data -> KVM_RUN -> complete_emulated_mmio
# (EMULTYPE_NO_DECODE) writes EAX.  With no device at 0xd0000000 the VMM answers all-ones.
# Exits: N x KVM_EXIT_MMIO (read, 0xd0000000, len 4), then OUT 0xf4 = 0.  ECX = 0 at EXIT.

        .include "kvmsim.inc"

.if KVMSIM_MODE_LONG64 == 0
        .error  "mmio_loop.S is a long64 guest (0xd0000000 is mapped by the long64 identity map)"
.endif

.ifndef MMIO_LOOP_COUNT
MMIO_LOOP_COUNT = 100000
.endif
MMIO_LOOP_GPA = 0xd0000000

        GUEST_ENTRY
        movl    $MMIO_LOOP_GPA, %ebx
        testl   %ecx, %ecx
        jnz     mmio_loop
        movl    $MMIO_LOOP_COUNT, %ecx
mmio_loop:
        movl    (%rbx), %eax
        decl    %ecx
        jnz     mmio_loop
        EXIT    0
