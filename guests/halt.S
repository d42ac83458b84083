# halt.S — HLT with interrupts disabled; the VMM sees KVM_EXIT_HLT and runs the vCPU again.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# The LAPIC is in userspace in our model, so kvm_emulate_halt skips the HLT and returns
# KVM_EXIT_HLT (x86.c __kvm_emulate_halt); KVM_RUN again resumes after it.
# Exits: serial I/O, HLT x1, serial I/O, then OUT 0xf4 = 0.
# Expect: serial "halting\nresumed\n", one KVM_EXIT_HLT, debug-exit code 0; rip of the HLT
#         exit is at symbol halt_insn.

        .include "kvmsim.inc"

        GUEST_ENTRY
        SERIAL_PRINT "halting\n"
        cli
halt_insn:
        hlt
        SERIAL_PRINT "resumed\n"
        EXIT    0
