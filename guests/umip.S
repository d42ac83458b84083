# umip.S — CR4.UMIP as KVM emulates it on a host without UMIP (descriptor-table exiting).
# GNU as, AT&T.  Mode: long64.
#
# CPL0: the ring-3 world (LGDT, LTR, U bits), then MOV CR4 |= UMIP: a CR_ACCESS exit, and
# vmx_set_cr4 turns on descriptor-table exiting instead of setting the CPU's UMIP.  SGDT at CPL0
# exits (GDTR_IDTR) and KVM's emulator stores the GDTR (allowed at CPL0).  CPL3: SGDT, SIDT
# (GDTR_IDTR), SLDT, STR (LDTR_TR) exit and the emulator raises #GP(0) for UMIP at CPL > 0; SMSW
# cannot be intercepted and returns CR0[15:0] (the known gap of emulated UMIP).
# Results (RESULTS = 0x90000, 4 bytes each):
#   +0x00 SGDT at CPL0: the limit stored         gdt_end - gdt - 1
#   +0x04 CPL at the user label                  3
#   +0x08 SGDT vector, +0x0c error   13, 0       +0x10 SIDT vector, +0x14 error  13, 0
#   +0x18 SLDT vector, +0x1c error   13, 0       +0x20 STR vector, +0x24 error   13, 0
#   +0x28 SMSW fault vector (0xff none)  0xff    +0x2c SMSW value & 0xffff: 0x0033 (PE MP ET NE)
        .include "kvmsim.inc"

RESULTS = 0x90000
.ifndef UMIP_SMSW
UMIP_SMSW = 0               # 1: also SMSW at CPL3 (+0x28/+0x2c; 0 leaves them 0)
.endif
X86_CR4_UMIP = 1 << 11

.macro FAULT_TO off
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, RESULTS+\off
        movl    kvmsim_fault_error, %eax
        movl    %eax, RESULTS+\off+4
.endm

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        CPL3_IOMAP_DENY_ALL
        andb    $0x0f, TSS + IOMAP + KVMSIM_EXIT_PORT/8     # ports 0xf4-0xf7: EXIT from CPL3
        lgdt    gdtr
        movw    $TSS_SEL, %ax
        ltr     %ax
        orl     $4, 0x4000
        orl     $4, 0x5000
        orl     $4, 0x6000
        movq    %cr3, %rax
        movq    %rax, %cr3
        movq    %cr4, %rax
        orl     $X86_CR4_UMIP, %eax
        movq    %rax, %cr4
        sgdt    scratch
        movzwl  scratch, %eax
        movl    %eax, RESULTS+0x00
        CPL3_IRETQ user

user:
        movw    %cs, %ax
        andl    $3, %eax
        movl    %eax, RESULTS+0x04
        TRY     sgdt scratch
        FAULT_TO 0x08
        TRY     sidt scratch
        FAULT_TO 0x10
        TRY     sldt %ax
        FAULT_TO 0x18
        TRY     str %ax
        FAULT_TO 0x20
.if UMIP_SMSW
        xorl    %eax, %eax
        TRY     smsw %eax
        movl    %eax, %ebx
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, RESULTS+0x28
        andl    $0xffff, %ebx
        movl    %ebx, RESULTS+0x2c
.endif
        EXIT    0

        .data
        CPL3_GDT
scratch:
        .fill   16, 1, 0
