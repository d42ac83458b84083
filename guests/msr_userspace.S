# msr_userspace.S — an unknown MSR answered by userspace (KVM_CAP_X86_USER_SPACE_MSR).
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# The scenario enables user-space MSR exits for KVM_MSR_EXIT_REASON_UNKNOWN, so
# 1. RDMSR 0x12345678 -> KVM_EXIT_X86_RDMSR (reason UNKNOWN, index 0x12345678); the VMM puts
#    the scenario's value in run->msr.data (error 0); complete_fast_rdmsr loads edx:eax.
# 2. WRMSR 0x12345678 with edx:eax = 0x00000001:0xcafef00d -> KVM_EXIT_X86_WRMSR with
#    data 0x1cafef00d; the VMM accepts it (error 0).
# Neither may fault (EXPECT_NO_FAULT).  If MSR_USER_VALUE is defined (guest.defsym), the guest
# also checks the value it read.
# Registers at EXIT: rsi = eax, rdi = edx read in step 1; long64 also r8 = edx:eax.
# Expect: serial "PASS: ..." lines and "SUMMARY: N tests, 0 failures\n", debug-exit code 0,
#         userspace exits X86_RDMSR then X86_WRMSR.

        .include "kvmsim.inc"

MSR_UNKNOWN = 0x12345678
WR_LO = 0xcafef00d
WR_HI = 0x00000001

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS

        movl    $MSR_UNKNOWN, %ecx
        xorl    %eax, %eax
        xorl    %edx, %edx
        EXPECT_NO_FAULT rdmsr
        REPORT  e, "rdmsr of an unknown MSR is answered by userspace"
        movl    %eax, %esi
        movl    %edx, %edi
.if KVMSIM_MODE_LONG64
        movq    %rdx, %r8
        shlq    $32, %r8
        orq     %rax, %r8
.endif
.ifdef MSR_USER_VALUE
        cmpl    $(MSR_USER_VALUE & 0xffffffff), %esi
        jne     1f
        cmpl    $((MSR_USER_VALUE >> 32) & 0xffffffff), %edi
1:      REPORT  e, "rdmsr returns the value userspace supplied"
.endif

        movl    $MSR_UNKNOWN, %ecx
        movl    $WR_LO, %eax
        movl    $WR_HI, %edx
        EXPECT_NO_FAULT wrmsr
        REPORT  e, "wrmsr of an unknown MSR is accepted by userspace"

        REPORT_SUMMARY
