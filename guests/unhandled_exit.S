# unhandled_exit.S — an instruction whose VM exit the kvmsim model once did not handle (issue 14 built them all).
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# Choice: INVD (0f 08), which VM-exits unconditionally on VMX with exit reason 13 (INVD).
# Real KVM (vmx.c v6.8) handles it with kvm_emulate_invd, a NOP + skip, so on /dev/kvm this
# guest prints "survived\n" and EXITs 0.  A model without that table entry goes to
# unexpected_vmexit: KVM_EXIT_INTERNAL_ERROR, suberror KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
# (4), ndata 2, data[0] = 13 (exit reason), data[1] = last vmentry cpu.
# UNHANDLED_EXIT_REASON (guest.defsym) picks another unconditional exit:
#   13 INVD (default) · 54 WBINVD · 36 MWAIT (after MONITOR, exit 39 first).
# The instruction is at symbol unhandled_insn.
# Expect (model without the handler): serial "before\n", stop internal-error suberror 4.

        .include "kvmsim.inc"

.ifndef UNHANDLED_EXIT_REASON
UNHANDLED_EXIT_REASON = 13
.endif

        GUEST_ENTRY
        SERIAL_PRINT "before\n"
.if UNHANDLED_EXIT_REASON == 13
unhandled_insn:
        invd
.elseif UNHANDLED_EXIT_REASON == 54
unhandled_insn:
        wbinvd
.elseif UNHANDLED_EXIT_REASON == 36
        movl    $monitor_line, %eax     # MONITOR's address is [E/R]AX (DS), 32-bit is enough
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        monitor
unhandled_insn:
        mwait
.else
        .error  "UNHANDLED_EXIT_REASON must be 13, 54 or 36"
.endif
        SERIAL_PRINT "survived\n"
        EXIT    0

        .data
        .balign 64
monitor_line:
        .space  64
