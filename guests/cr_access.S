# cr_access.S — the control-register accesses KVM intercepts, and those it lets the guest do.
# GNU as, AT&T.  Mode: long64.
#
# Results (RESULTS = 0x90000, 4 bytes each):
#   +0x00  CR0.TS after MOV CR0 set it (guest-owned bit: no exit)          8
#   +0x04  CR0.TS after CLTS (guest-owned: CLTS runs natively, no exit)    0
#   +0x08  MOV CR4 with CR4.VMXE (the guest's CPUID has no VMX): vector    13 (#GP from kvm_set_cr4)
#   +0x0c  ... its error code                                              0
#   +0x10  CR4.VMXE after it                                               0
#   +0x14  MOV CR8 = 5 (CR8-load exiting), MOV from CR8 (CR8-store exiting) 5
#   +0x18  MOV CR8 = 0x10: reserved bits above bit 3: vector               13
#   +0x1c  CR8 after it                                                    5
#   +0x20  LMSW 0: clears MP (host-owned: exits), cannot clear PE; CR0 & 0xf   1
#   +0x24  LMSW 2: sets MP again (exits); CR0 & 0xf                       3 (PE MP)
#   +0x28  SMSW (read shadow, no exit) & 0xf                               3
        .include "kvmsim.inc"

RESULTS = 0x90000

.macro PUT off, src
        movl    \src, RESULTS+\off
.endm

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        # CR0.TS: the guest owns it (KVM_POSSIBLE_CR0_GUEST_BITS): MOV to CR0 and CLTS run natively
        movq    %cr0, %rax
        orq     $8, %rax
        movq    %rax, %cr0
        movq    %cr0, %rax
        andl    $8, %eax
        PUT     0x00, %eax
        clts
        movq    %cr0, %rax
        andl    $8, %eax
        PUT     0x04, %eax
        # CR4.VMXE: host-owned, exits; kvm_set_cr4 finds it reserved for this guest: #GP(0)
        movq    %cr4, %rax
        orq     $(1 << 13), %rax
        TRY     movq %rax, %cr4
        movzbl  kvmsim_fault_vector, %eax
        PUT     0x08, %eax
        movl    kvmsim_fault_error, %eax
        PUT     0x0c, %eax
        movq    %cr4, %rax
        andl    $(1 << 13), %eax
        PUT     0x10, %eax
        # CR8 (the TPR, userspace LAPIC: KVM keeps it): a load and a store, both exiting
        movl    $5, %eax
        movq    %rax, %cr8
        movq    %cr8, %rbx
        PUT     0x14, %ebx
        movl    $0x10, %eax
        TRY     movq %rax, %cr8
        movzbl  kvmsim_fault_vector, %eax
        PUT     0x18, %eax
        movq    %cr8, %rbx
        PUT     0x1c, %ebx
        # LMSW: MP is host-owned, so changing it exits (kvm_lmsw); LMSW never clears PE
        xorl    %eax, %eax
        lmsw    %ax
        movq    %cr0, %rax
        andl    $0xf, %eax
        PUT     0x20, %eax
        movl    $2, %eax
        lmsw    %ax
        movq    %cr0, %rax
        andl    $0xf, %eax
        PUT     0x24, %eax
        smsw    %eax
        andl    $0xf, %eax
        PUT     0x28, %eax
        EXIT    0
