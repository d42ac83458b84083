# hypercall.S — VMCALL: a hypercall KVM implements and an unknown one.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# 1. rax = KVM_HC_SCHED_YIELD (11), rbx (a0) = 0xffff, a destination APIC ID no vCPU has:
#    x86.c kvm_sched_yield finds no target and does not yield; the hypercall returns 0.
#    (guest_pv_has() is true unless KVM_CAP_ENFORCE_PV_FEATURE_CPUID is on.)
# 2. rax = 0x1234 (unknown): returns -KVM_ENOSYS = -1000; outside 64-bit mode the result is
#    truncated to 32 bits (0xfffffc18), in long64 rax = 0xfffffffffffffc18.
# Exits: VMCALL x2 (handle_vmcall -> kvm_emulate_hypercall, no userspace exit)
#        (+ serial I/O), then OUT 0xf4.
# Registers at EXIT: rsi = result of 1 (0), rdi = result of 2 (-1000, width as above).
# Expect: serial "PASS: ..." x2 + "SUMMARY: 2 tests, 0 failures\n", debug-exit code 0.

        .include "kvmsim.inc"

KVM_HC_SCHED_YIELD = 11
HC_UNKNOWN = 0x1234
KVM_ENOSYS = 1000

        GUEST_ENTRY
        movl    $KVM_HC_SCHED_YIELD, %eax
        movl    $0xffff, %ebx           # a0: destination APIC ID
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        xorl    %esi, %esi
        vmcall
.if KVMSIM_MODE_LONG64
        movq    %rax, %rsi
.else
        movl    %eax, %esi
.endif

        movl    $HC_UNKNOWN, %eax
        xorl    %ebx, %ebx
        vmcall
.if KVMSIM_MODE_LONG64
        movq    %rax, %rdi
        testq   %rsi, %rsi
        REPORT  e, "KVM_HC_SCHED_YIELD to a missing APIC ID returns 0"
        cmpq    $-KVM_ENOSYS, %rdi
        REPORT  e, "unknown hypercall returns -KVM_ENOSYS (64-bit)"
.else
        movl    %eax, %edi
        testl   %esi, %esi
        REPORT  e, "KVM_HC_SCHED_YIELD to a missing APIC ID returns 0"
        cmpl    $-KVM_ENOSYS, %edi
        REPORT  e, "unknown hypercall returns -KVM_ENOSYS (32-bit)"
.endif
        REPORT_SUMMARY
