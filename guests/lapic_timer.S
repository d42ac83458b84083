# lapic_timer.S — the in-kernel APIC timer delivering interrupts to IDT handlers (long64).
# GNU as, AT&T syntax.
#
# 1. One-shot: divide by 1, LVTT vector 0x40, TMICT 20000.  TMCCT counts down on virtual time
#    (retired guest instructions); the guest spins until its handler ran: KVM's VMX-preemption
#    timer fires (PREEMPTION_TIMER exit), the tick goes to the IRR and is injected.  Afterwards the
#    one-shot timer is stopped (TMCCT 0).
# 2. Periodic: vector 0x41, TMICT 1000 (KVM raises the period to min_timer_period_us, 200 us);
#    three HLTs, each woken by the next tick (the halted vCPU sleeps until the deadline).
# 3. TSC-deadline: vector 0x42, IA32_TSC_DEADLINE = 1 (already passed): the tick is pending at
#    once and delivered when IF is set.
# Handlers count their vector's ticks and write EOI (the APIC_ACCESS fast path: no emulation).
# Expect: "SUMMARY: 7 tests, 0 failures".

        .include "kvmsim.inc"

APIC_BASE = 0xfee00000

        GUEST_ENTRY
        SET_IDT_HANDLER 0x40, tick40
        SET_IDT_HANDLER 0x41, tick41
        SET_IDT_HANDLER 0x42, tick42
        movl    $APIC_BASE, %ebp
        movl    $0x1ff, 0xf0(%ebp)          # software-enable
        movl    $0xb, 0x3e0(%ebp)           # divide by 1

        cli
        movl    $0x40, 0x320(%ebp)          # LVTT: one-shot, vector 0x40
        movl    $20000, 0x380(%ebp)         # TMICT
        movl    0x390(%ebp), %eax           # TMCCT, a few instructions later
        cmpl    $20000, %eax
        jae     1f
        cmpl    $19000, %eax
1:      REPORT  a, "TMCCT counts down from TMICT on virtual time"
        sti
2:      cmpl    $0, ticks40
        je      2b
        cmpl    $1, ticks40
        REPORT  e, "one-shot timer interrupt delivered to the vector 0x40 handler"
        movl    0x390(%ebp), %eax
        cmpl    $0, %eax
        REPORT  e, "TMCCT is 0 after the one-shot expired"

        movl    $0x20041, 0x320(%ebp)       # LVTT: periodic, vector 0x41
        movl    $1000, 0x380(%ebp)
        hlt
        hlt
        hlt
        movl    $0x10041, 0x320(%ebp)       # masked
        movl    ticks41, %eax
        cmpl    $3, %eax
        REPORT  e, "periodic timer woke three HLTs with three ticks"
        cmpl    $0, ticks40
        REPORT  ne, "(one-shot did not fire again)"

        cli
        movl    $0x40042, 0x320(%ebp)       # LVTT: TSC-deadline, vector 0x42
        movl    0x380(%ebp), %eax
        cmpl    $0, %eax
        REPORT  e, "switching to TSC-deadline mode clears TMICT"
        movl    $0x6e0, %ecx
        movl    $1, %eax
        xorl    %edx, %edx
        wrmsr
        sti
        nop
        cmpl    $1, ticks42
        REPORT  e, "a passed TSC deadline fires at once (vector 0x42)"
        REPORT_SUMMARY

tick40: incl    ticks40
        movl    $0, 0xb0(%ebp)              # EOI
        iretq
tick41: incl    ticks41
        movl    $0, 0xb0(%ebp)
        iretq
tick42: incl    ticks42
        movl    $0, 0xb0(%ebp)
        iretq

        .data
ticks40: .long 0
ticks41: .long 0
ticks42: .long 0
