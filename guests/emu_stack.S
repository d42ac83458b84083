# emu_stack.S — PUSH/POP with an MMIO operand, then the stack itself in MMIO: PUSH reg/imm,
# POP, PUSHF/POPF, CALL/RET (near, RET imm16), CALL through a pointer in MMIO, ENTER/LEAVE.
# GNU as, AT&T.  Modes: prot32, long64.  Every stack access is an MMIO exit.
        .include "kvmsim.inc"
        .include "emu.inc"

.macro PUSHP x
.if KVMSIM_MODE_LONG64
        pushq   \x
.else
        pushl   \x
.endif
.endm

.macro POPP x
.if KVMSIM_MODE_LONG64
        popq    \x
.else
        popl    \x
.endif
.endm

        GUEST_ENTRY
        EMU_BEGIN
        # PUSH r/m and POP r/m with the operand in MMIO (stack in RAM)
        MMIO64  0x00, 0x1122334455667788
        PUSHP   0x00(%ebx)
        POPP    0x08(%ebx)
        pushw   0x02(%ebx)
        popw    0x10(%ebx)
        SAVE_BANK 0x08, 0x0c, 0x10
        # The stack in the register bank
        BYMODE  "movq %rsp, %rbp", "movl %esp, %ebp"
        movl    $MMIO_BASE + 0x100, %esp
        movl    $0xcafe, %ecx
        BYMODE  "pushq %rcx", "pushl %ecx"
        PUSHP   $-2
        pushw   $0x7777
        SET_FLAGS 0xc95
        BYMODE  "pushfq", "pushfl"
        SET_FLAGS 0x2
        BYMODE  "popfq", "popfl"
        SAVE_FLAGS FL_ALL
        popw    %dx
        SAVE    %edx
        BYMODE  "popq %rsi", "popl %esi"
        SAVE    %esi
        BYMODE  "popq %rdx", "popl %edx"
        SAVE    %edx
        # CALL / RET on the MMIO stack
        call    leaf
        SAVE    %eax
        movl    $leaf_imm, 0x80(%ebx)
.if KVMSIM_MODE_LONG64
        movl    $0, 0x84(%rbx)
        callq   *0x80(%rbx)
.else
        calll   *0x80(%ebx)
.endif
        SAVE    %eax
        PUSHP   $0x99                       # an argument RET imm16 drops
        call    leaf_ret8
        SAVE    %eax
        # ENTER / LEAVE
        movl    $0x1234, %eax
        BYMODE  "movq %rbp, %r8", "movl %ebp, 0x90(%ebx)"
        movl    $0xbbbb, %ebp
        enter   $16, $0
        BYMODE  "movq %rsp, %rax", "movl %esp, %eax"
        SAVE    %eax
        BYMODE  "movq %rbp, %rax", "movl %ebp, %eax"
        SAVE    %eax
        leave
        SAVE    %ebp
        BYMODE  "movq %rsp, %rax", "movl %esp, %eax"
        SAVE    %eax
        BYMODE  "movq %r8, %rsp", "movl 0x90(%ebx), %esp"
        EXIT    0

leaf:   movl    $0x1eaf, %eax
        ret
leaf_ret8:
        movl    $0x3eaf, %eax
.if KVMSIM_MODE_LONG64
        ret     $8
.else
        ret     $4
.endif
leaf_imm:
        movl    $0x2eaf, %eax
        ret
