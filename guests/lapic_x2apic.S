# lapic_x2apic.S — the in-kernel APIC in x2APIC mode through MSRs 0x800-0x8ff (long64).
# GNU as, AT&T syntax.
#
# 1. IA32_APIC_BASE (0x1b) reads 0xfee00900 (enabled, BSP); WRMSR with bit 10 enters x2APIC mode.
# 2. x2APIC ID (0x802) is the vCPU id 0, LDR (0x80d) 1 (cluster 0, bit 0); writes to them #GP.
# 3. The xAPIC page now reads all ones (KVM_X86_QUIRK_LAPIC_MMIO_HOLE) — an EPT exit, not APIC_ACCESS.
# 4. TPR (0x808) write/read; SELF IPI (0x83f) with vector 0x70 while IF=0: pending, then STI →
#    STI; HLT: the handler runs and writes EOI (0x80b); IRR (0x823) and ISR (0x813) empty afterwards.
# 5. ICR (0x830) is one 64-bit register; a reserved bit #GPs.
# 6. Back to xAPIC mode without disabling first: #GP (an illegal transition).
# Expect: "SUMMARY: 11 tests, 0 failures".

        .include "kvmsim.inc"

.macro RDMSR_ msr
        movl    $(\msr), %ecx
        rdmsr
.endm
.macro WRMSR_ msr, lo, hi=0
        movl    $(\msr), %ecx
        movl    $(\lo), %eax
        movl    $(\hi), %edx
        wrmsr
.endm

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        SET_IDT_HANDLER 0x70, ipi_handler
        cli

        RDMSR_  0x1b
        cmpl    $0xfee00900, %eax
        REPORT  e, "IA32_APIC_BASE is 0xfee00900 after reset"
        WRMSR_  0x1b, 0xfee00d00
        RDMSR_  0x1b
        cmpl    $0xfee00d00, %eax
        REPORT  e, "WRMSR IA32_APIC_BASE enters x2APIC mode"

        RDMSR_  0x802
        movl    %eax, %ebx
        RDMSR_  0x80d
        cmpl    $0, %ebx
        jne     1f
        cmpl    $1, %eax
1:      REPORT  e, "x2APIC ID 0, LDR 1"
        movl    $0x802, %ecx
        movl    $5, %eax
        xorl    %edx, %edx
        EXPECT_FAULT GP_VECTOR, wrmsr
        REPORT  e, "the x2APIC ID is read-only (#GP)"

        movl    $0xfee00030, %esi
        EXPECT_L (%esi), 0xffffffff, "the xAPIC page reads all ones in x2APIC mode"

        WRMSR_  0x80f, 0x1ff                # SPIV: enabled
        WRMSR_  0x808, 0x20                 # TPR
        RDMSR_  0x808
        cmpl    $0x20, %eax
        REPORT  e, "TPR through MSR 0x808"

        WRMSR_  0x83f, 0x70                 # SELF IPI, vector 0x70
        RDMSR_  0x823                       # IRR bits 127:96
        cmpl    $0x10000, %eax
        REPORT  e, "SELF IPI is pending in the IRR while IF=0"
        sti                                 # (the STI shadow covers the HLT, which wakes at once)
        hlt
        cmpl    $1, ipis
        REPORT  e, "the self-IPI reached its handler after STI"
        RDMSR_  0x823
        movl    %eax, %ebx
        RDMSR_  0x813                       # ISR bits 127:96
        orl     %ebx, %eax
        REPORT  z, "IRR and ISR empty after the handler's EOI"

        movl    $0x830, %ecx
        movl    $0x00100000, %eax           # bit 20: reserved in the x2APIC ICR
        xorl    %edx, %edx
        EXPECT_FAULT GP_VECTOR, wrmsr
        REPORT  e, "a reserved ICR bit #GPs"

        movl    $0x1b, %ecx
        movl    $0xfee00900, %eax
        xorl    %edx, %edx
        EXPECT_FAULT GP_VECTOR, wrmsr
        REPORT  e, "x2APIC to xAPIC without disabling #GPs"
        REPORT_SUMMARY

ipi_handler:
        pushq   %rax
        pushq   %rcx
        pushq   %rdx
        incl    ipis
        WRMSR_  0x80b, 0                    # EOI
        popq    %rdx
        popq    %rcx
        popq    %rax
        iretq

        .data
ipis:   .long 0
