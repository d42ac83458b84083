# interrupt_window.S — a userspace PIC's interrupt raised while the guest has IF=0, delivered
# through the interrupt window (scenarios/interrupt-window.yaml).  GNU as, AT&T, long64.
#
# The VMM raises vector 0x20 at the OUT to port 0x80 (vmm.irqs).  kvm_run says IF=0, not ready
# for injection, so it sets request_interrupt_window; KVM enables interrupt-window exiting, the
# guest runs on with IF=0, STI, one instruction in the STI shadow, and at the first boundary
# where an interrupt could be taken the CPU exits (INTERRUPT_WINDOW) and KVM returns
# KVM_EXIT_IRQ_WINDOW_OPEN; the VMM then KVM_INTERRUPTs 0x20 and the handler runs there.
# Results: EBX = times the handler ran, ESI = the RIP it interrupted, EDI = 1 if that RIP is
# shadow_end (the end of the STI shadow), R9 = the phase (R8) the guest was in.

        .include "kvmsim.inc"

        GUEST_ENTRY
        SET_IDT_HANDLER 0x20, irq_handler
        xorl    %ebx, %ebx
        xorl    %esi, %esi
        xorl    %edi, %edi
        xorl    %r8d, %r8d
        xorl    %r9d, %r9d
        cli
        outb    %al, $0x80              # the VMM's PIC raises 0x20 now
        movl    $1, %r8d                # IF=0: the interrupt waits
        movl    $2, %r8d
        movl    $3, %r8d
        sti
        nop                             # in the STI shadow: still blocked
shadow_end:
        movl    $1000, %ecx             # the window is open before this instruction
1:      decl    %ecx
        jnz     1b
        movl    %ebx, %eax
        EXIT_EAX

irq_handler:
        incl    %ebx
        movq    (%rsp), %rsi            # the interrupted RIP
        leaq    shadow_end(%rip), %rax
        cmpq    %rax, %rsi
        sete    %al
        movzbl  %al, %edi
        movl    %r8d, %r9d
        iretq
