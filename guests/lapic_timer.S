# lapic_timer.S — the in-kernel APIC timer delivering interrupts to IDT handlers (long64).
# GNU as, AT&T syntax.
#
# 1. One-shot: divide by 1, LVTT vector 0x40, TMICT 2000000 (2 ms).  TMCCT counts down on
#    virtual time; STI; HLT sleeps until the tick wakes the vCPU (in the sim, virtual time jumps to
#    the deadline).  Afterwards the one-shot timer is stopped (TMCCT 0).
# 2. Periodic: vector 0x41, TMICT 1000 (KVM raises the period to min_timer_period_us, 200 us);
#    the guest spins until three ticks arrived: in the sim each comes through KVM's
#    VMX-preemption timer (a PREEMPTION_TIMER exit, the tick goes to the IRR and is injected).
# 3. TSC-deadline: vector 0x42, IA32_TSC_DEADLINE = 1 (already passed): the tick is pending at
#    once; STI; HLT takes it (the STI shadow covers the HLT, which then wakes at once).
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
        movl    $2000000, 0x380(%ebp)       # TMICT
        movl    0x390(%ebp), %eax           # TMCCT, a little later
        cmpl    $2000000, %eax
        jae     1f
        cmpl    $0, %eax
1:      REPORT  a, "TMCCT counts down from TMICT"
        sti
        hlt
        cmpl    $1, ticks40
        REPORT  e, "one-shot timer interrupt woke HLT and reached the vector 0x40 handler"
        EXPECT_L 0x390(%ebp), 0, "TMCCT is 0 after the one-shot expired"

        movl    $0x20041, 0x320(%ebp)       # LVTT: periodic, vector 0x41
        movl    $1000, 0x380(%ebp)
2:      cmpl    $3, ticks41
        jb      2b
        movl    $0x10041, 0x320(%ebp)       # masked
        REPORT  e, "periodic timer: three ticks while the guest spins"
        cmpl    $1, ticks40
        REPORT  e, "(one-shot did not fire again)"

        cli
        movl    $0x40042, 0x320(%ebp)       # LVTT: TSC-deadline, vector 0x42
        EXPECT_L 0x380(%ebp), 0, "switching to TSC-deadline mode clears TMICT"
        movl    $0x6e0, %ecx
        movl    $1, %eax
        xorl    %edx, %edx
        wrmsr
        sti
        hlt
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
