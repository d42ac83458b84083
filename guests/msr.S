# msr.S — RDMSR/WRMSR of a known MSR, then an unknown MSR that must #GP.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# 1. WRMSR IA32_SYSENTER_CS (0x174) = 0xabcd, RDMSR it back: edx:eax = 0:0xabcd
#    (vmx.c vmx_set_msr/vmx_get_msr: GUEST_SYSENTER_CS in the VMCS).
# 2. RDMSR 0x12345678 (unknown): KVM injects #GP(0) (ignore_msrs=0, no userspace MSR exits).
# 3. WRMSR 0x12345678 (unknown): #GP(0) as well.
# The #GPs are caught by the library's exception table (EXPECT_FAULT) and reported.
# Exits: MSR_WRITE x2, MSR_READ x2 (+ serial I/O), then OUT 0xf4.
# Registers at EXIT: rsi = eax and rdi = edx from step 1; rbx = #GP error code of step 2.
# Expect: serial "PASS: ..." x4 + "SUMMARY: 4 tests, 0 failures\n", debug-exit code 0,
#         two #GP injections.

        .include "kvmsim.inc"

MSR_IA32_SYSENTER_CS = 0x174
MSR_UNKNOWN = 0x12345678
SYSENTER_CS_VALUE = 0xabcd

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS

        movl    $MSR_IA32_SYSENTER_CS, %ecx
        movl    $SYSENTER_CS_VALUE, %eax
        xorl    %edx, %edx
        wrmsr
        xorl    %eax, %eax
        movl    $0xffffffff, %edx
        rdmsr
        movl    %eax, %esi
        movl    %edx, %edi
        cmpl    $SYSENTER_CS_VALUE, %esi
        REPORT  e, "rdmsr IA32_SYSENTER_CS returns what wrmsr wrote (eax)"
        cmpl    $0, %edi
        REPORT  e, "rdmsr IA32_SYSENTER_CS returns what wrmsr wrote (edx)"

        movl    $MSR_UNKNOWN, %ecx
        EXPECT_FAULT GP_VECTOR, rdmsr
        REPORT  e, "rdmsr of an unknown MSR raises #GP"
        movl    kvmsim_fault_error, %ebx

        movl    $MSR_UNKNOWN, %ecx
        xorl    %eax, %eax
        xorl    %edx, %edx
        EXPECT_FAULT GP_VECTOR, wrmsr
        REPORT  e, "wrmsr of an unknown MSR raises #GP"

        REPORT_SUMMARY
