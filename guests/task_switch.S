# task_switch.S — a 32-bit hardware task switch: CALL through a GDT task gate to task B, IRET
# (NT set) back to task A.  Each switch VM-exits as TASK_SWITCH (reason 9) and KVM's emulator
# does it (emulator_task_switch).  GNU as, AT&T.  Mode: prot32 only.
#
# Our GDT: 0x08 code32, 0x10 data (the boot layout), 0x18 TSS A (ours, loaded with LTR),
# 0x20 TSS B, 0x28 task gate -> 0x20.  RESULTS (0x90000), dwords:
#   task B:  +0x00 EAX  +0x04 EBX (from TSS B)  +0x08 EFLAGS.NT  +0x0c back link in TSS B
#            +0x10 TR   +0x14 TSS B access byte  +0x18 TSS A access byte  +0x1c CR0.TS
#   task A:  +0x20 ESI (kept in TSS A)  +0x24 EFLAGS.NT  +0x28 TSS B access byte
#            +0x2c 1 if TSS B's saved EIP is the instruction after its IRET
#            +0x30 NT in TSS B's saved EFLAGS   +0x34 TR
#            +0x38/+0x3c fault vector/error code of `lcall $0x18` (TSS A is busy: #GP(0x18))
        .include "kvmsim.inc"

.if KVMSIM_MODE_PROT32 == 0
        .error  "task_switch.S is prot32 only"
.endif

        .set    RESULTS, 0x90000
        .set    TSS_A, 0x91000
        .set    TSS_B, 0x92000
        .set    STACK_B, 0x94000

        GUEST_ENTRY
        lgdt    gdt_desc
        ljmp    $0x08, $1f                  # a far jump to a code segment: no task switch
1:      INSTALL_EXCEPTION_HANDLERS
        movl    $RESULTS, %edi
        movl    $0xffffffff, 0x38(%edi)
        # task B's state: CR3 0, EIP, EFLAGS, EAX, EBX, ESP and flat selectors
        movl    $task_b, TSS_B + 32
        movl    $0x2, TSS_B + 36
        movl    $0xb0b0b0b0, TSS_B + 40
        movl    $0xb1b1b1b1, TSS_B + 52
        movl    $STACK_B, TSS_B + 56
        movl    $0x10, TSS_B + 72
        movl    $0x08, TSS_B + 76
        movl    $0x10, TSS_B + 80
        movl    $0x10, TSS_B + 84
        movl    $0x10, TSS_B + 88
        movl    $0x10, TSS_B + 92
        movw    $0x18, %ax
        ltr     %ax                         # task A is TSS 0x18 (now busy)
        movl    $0x12345678, %esi
        lcall   $0x28, $0                   # task gate -> TSS B: TASK_SWITCH (CALL)
        # back in task A after task B's IRET: TASK_SWITCH (IRET)
        movl    %esi, 0x20(%edi)
        pushfl
        popl    %eax
        andl    $0x4000, %eax
        movl    %eax, 0x24(%edi)
        movzbl  gdt + 0x20 + 5, %eax
        movl    %eax, 0x28(%edi)
        xorl    %eax, %eax
        cmpl    $task_b_after, TSS_B + 32
        sete    %al
        movl    %eax, 0x2c(%edi)
        movl    TSS_B + 36, %eax
        andl    $0x4000, %eax
        movl    %eax, 0x30(%edi)
        str     %ax
        movzwl  %ax, %eax
        movl    %eax, 0x34(%edi)
        TRY     lcall $0x18, $0             # a busy TSS: #GP(0x18) before any exit
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, 0x38(%edi)
        movl    kvmsim_fault_error, %eax
        movl    %eax, 0x3c(%edi)
        EXIT    0

task_b:
        movl    $RESULTS, %edi
        movl    %eax, 0x00(%edi)
        movl    %ebx, 0x04(%edi)
        pushfl
        popl    %eax
        andl    $0x4000, %eax
        movl    %eax, 0x08(%edi)
        movzwl  TSS_B, %eax
        movl    %eax, 0x0c(%edi)
        str     %ax
        movzwl  %ax, %eax
        movl    %eax, 0x10(%edi)
        movzbl  gdt + 0x20 + 5, %eax
        movl    %eax, 0x14(%edi)
        movzbl  gdt + 0x18 + 5, %eax
        movl    %eax, 0x18(%edi)
        movl    %cr0, %eax
        andl    $8, %eax
        movl    %eax, 0x1c(%edi)
        iret                                # NT set: back to the task in the back link
task_b_after:
        EXIT    0x55                        # only if task B were resumed

        .data
        .balign 8
gdt:    .quad   0
        .quad   0x00cf9b000000ffff          # 0x08 code32 flat
        .quad   0x00cf93000000ffff          # 0x10 data flat
        .long   0x10000067, 0x00008909      # 0x18 TSS A at 0x91000, limit 0x67, available
        .long   0x20000067, 0x00008909      # 0x20 TSS B at 0x92000
        .long   0x00200000, 0x00008500      # 0x28 task gate -> 0x20
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt
