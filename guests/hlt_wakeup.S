# hlt_wakeup.S — a guest that HLTs with interrupts enabled and is woken by an interrupt the VMM
# injects (KVM_INTERRUPT) before re-entering: the scenario's `vmm: {on_hlt: resume}`.
# GNU as, AT&T syntax.  Modes: long64 (prot32 too, but kvm_pvm's emulator cannot IRETD there).
#
# No in-kernel LAPIC: kvm_emulate_halt skips the HLT and exits with KVM_EXIT_HLT (x86.c
# __kvm_emulate_halt); a VMM that resumes enters the guest again after the HLT, and an
# interrupt queued with KVM_INTERRUPT is delivered first (IF=1, no STI shadow left).
# WAKE_VECTOR: the injected vector; HALTS: how many times the guest halts.
# Exits: HLT x HALTS (no other exit in between), then OUT 0xf4 = wake-ups counted by the
# handler (EBX); ESI = HLTs passed.

        .include "kvmsim.inc"

        GUEST_ENTRY
        SET_IDT_HANDLER WAKE_VECTOR, wake
        xorl    %ebx, %ebx              # wake-ups (the handler counts)
        xorl    %esi, %esi              # HLTs passed
        movl    $HALTS, %ecx
1:      sti
        hlt                             # KVM_EXIT_HLT; the VMM injects WAKE_VECTOR and resumes
        cli
        incl    %esi
        decl    %ecx
        jnz     1b
        movl    %ebx, %eax
        EXIT_EAX

wake:   incl    %ebx
.if KVMSIM_MODE_LONG64
        iretq
.else
        iret
.endif
