# guest_debug_step.S — plain instructions single-stepped by a userspace debugger
# (scenarios/guest-debug-singlestep.yaml).  GNU as, AT&T, long64.
#
# The VMM turns KVM_GUESTDBG_SINGLESTEP on at the HLT exit (RIP already past the HLT: nothing
# is left to complete) and off at the OUT to port 0x81.  Every instruction in between ends in
# KVM_EXIT_DEBUG with run->debug.arch.pc = the next instruction's address; the guest computes
# as if nobody watched.  EAX at the end = EBX + ECX + EDX.

        .include "kvmsim.inc"

        GUEST_ENTRY
        hlt                             # the VMM enables single-stepping here (vmm.on_hlt: resume)
step_first:
        movl    $5, %ebx
        movl    $7, %ecx
        addl    %ebx, %ecx
        leal    3(%rcx), %edx
        xchgl   %ebx, %edx
        incl    %ecx
step_last:
        outb    %al, $0x81              # the VMM turns single-stepping off at this exit
        leal    (%rbx,%rcx), %eax
        addl    %edx, %eax
        EXIT_EAX
