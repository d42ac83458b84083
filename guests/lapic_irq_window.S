# lapic_irq_window.S — an in-kernel APIC interrupt that must wait for an interrupt window (long64).
# GNU as, AT&T syntax.
#
# 1. With IF=0 the guest sends itself a fixed IPI (xAPIC ICR, shorthand self, vector 0x50): KVM
#    cannot inject it, so it sets interrupt-window exiting; the guest keeps running with the
#    vector in the IRR and its handler not run.
# 2. STI; MOVL: the STI shadow lets the MOVL run first (EBX = 0 handler runs), then the window
#    opens: INTERRUPT_WINDOW exit, injection, the handler runs (ESI = 1).
# 3. Again with IF=0, then POPF setting IF: no shadow, the interrupt comes right after the POPF
#    (ECX = 2: the second handler run came before the next instruction).
# Expect: two INTERRUPT_WINDOW exits, rbx 0, rsi 1, rcx 2, rdi 2, "SUMMARY: 4 tests, 0 failures".

        .include "kvmsim.inc"

APIC_BASE = 0xfee00000

        GUEST_ENTRY
        SET_IDT_HANDLER 0x50, handler
        movl    $APIC_BASE, %ebp
        movl    $0x1ff, 0xf0(%ebp)          # software-enable
        cli
        movl    $0x00040050, 0x300(%ebp)    # fixed IPI to self, vector 0x50
        movl    $100, %ecx
1:      decl    %ecx
        jnz     1b
        cmpl    $0, runs
        REPORT  e, "IF=0: the interrupt waits"
        sti
        movl    runs, %ebx                  # in the STI shadow
        movl    runs, %esi
        cmpl    $0, %ebx
        REPORT  e, "the instruction after STI runs before the interrupt"
        cmpl    $1, %esi
        REPORT  e, "then the interrupt window exit delivers it"

        cli
        movl    $0x00040050, 0x300(%ebp)
        pushfq
        orq     $0x200, (%rsp)
        popfq
        movl    runs, %ecx
        movl    runs, %edi
        cmpl    $2, %ecx
        REPORT  e, "POPF setting IF opens the window at once (no shadow)"
        REPORT_SUMMARY

handler:
        incl    runs
        movl    $0, 0xb0(%ebp)              # EOI
        iretq

        .data
runs:   .long 0
