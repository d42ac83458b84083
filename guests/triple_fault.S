# triple_fault.S — an exception with no usable IDT: #DE -> #GP -> #DF -> triple fault.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# LIDT loads limit 0, then DIV by zero raises #DE.  Delivering vector 0 is outside the IDT
# limit (#GP), delivering that fails the same way (#DF), and a fault while delivering #DF is
# a triple fault: VM exit TRIPLE_FAULT, handle_triple_fault -> KVM_EXIT_SHUTDOWN.
# (#DE is not in KVM's exception bitmap, so no EXCEPTION_NMI exit happens on the way; #UD
# would be intercepted and go through the emulator first, which is why it is not used.)
# Exits: serial I/O, then TRIPLE_FAULT.  The fault is at symbol fault_insn.
# Expect: serial "about to triple fault\n", stop KVM_EXIT_SHUTDOWN.  EXIT 1 means we survived.

        .include "kvmsim.inc"

        GUEST_ENTRY
        SERIAL_PRINT "about to triple fault\n"
        lidt    null_idt
        xorl    %ecx, %ecx
        xorl    %eax, %eax
        xorl    %edx, %edx
fault_insn:
        divl    %ecx                    # #DE
        EXIT    1                       # not reached

        .section .rodata
        .balign 8
null_idt:
        .word   0                       # limit 0: no vector fits
        .quad   0                       # base (lidt reads 4 of these bytes, 8 in long64)
