# vcpu_state_sse.S — SSE in prot32 depends on the initial CR4 the scenario gives (vcpu.sregs).
# GNU as, AT&T syntax.  Mode: prot32.
#
# prot32's boot set-up leaves CR4 = 0, so with OSFXSR clear every SSE instruction raises #UD
# (SDM vol. 3 2.5; KVM's emulator checks the same bit).  A scenario sets `vcpu: {sregs: {cr4:
# 0x600}}` (OSFXSR|OSXMMEXCPT) and the same MOVUPS instructions run.
# --defsym OSFXSR=1: expect CR4.OSFXSR set and no fault, then OUT 0xf4 = number of failures.
# OSFXSR=0: expect it clear, then MOVUPS with the boot's empty IDT: #UD, #NP, #DF, triple fault
# (KVM_EXIT_SHUTDOWN).  A handler cannot return there on kvm_pvm, whose emulator has no
# IRETD outside real mode (see emulator-movbe-ud-prot32).
# Also checks the other `vcpu:` fields the scenario sets: ESP, EBX, and FS's base (FS_BASE).
# Exits: serial I/O (REPORT lines), then OUT 0xf4 or the shutdown.

        .include "kvmsim.inc"

        GUEST_ENTRY
        cmpl    $VCPU_ESP, %esp
        REPORT  e, "ESP from vcpu.regs.rsp"
        cmpl    $0x5eed, %ebx
        REPORT  e, "EBX from vcpu.regs.rbx"
        movl    $0xfeedf00d, FS_BASE            # through the flat DS
        cmpl    $0xfeedf00d, %fs:0              # the same bytes through FS, base FS_BASE
        REPORT  e, "FS base from vcpu.sregs.fs"
        movl    %cr4, %eax
        btl     $9, %eax                         # CR4.OSFXSR -> CF
.if OSFXSR
        REPORT  c, "CR4.OSFXSR set by vcpu.sregs.cr4"
        INSTALL_EXCEPTION_HANDLERS
        EXPECT_NO_FAULT movups src, %xmm0
        REPORT  e, "movups load runs"
        EXPECT_NO_FAULT movups %xmm0, dst
        REPORT  e, "movups store runs"
        movl    dst + 12, %eax
        cmpl    src + 12, %eax
        REPORT  e, "16 bytes copied through XMM0"
.else
        REPORT  nc, "CR4.OSFXSR clear (prot32 boot default)"
        SERIAL_PRINT "movups with the empty IDT: #UD, then a triple fault\n"
        movups  src, %xmm0
        EXIT    0x55                             # not reached
.endif
        REPORT_SUMMARY

        .data
        .balign 16
src:    .long   0x03020100, 0x07060504, 0x0b0a0908, 0x0f0e0d0c
dst:    .long   0, 0, 0, 0
