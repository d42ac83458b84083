# emu_movbe.S — MOVBE (0F 38 F0/F1, memory forms only) load and store with the operand in MMIO,
# 16/32 bits (and 64 in long64).  em_movbe first asks guest_has_movbe (CPUID.1:ECX.MOVBE as KVM
# lets the guest have it): without it every MOVBE is #UD, which TRY records.  Each step stores
# the fault vector (0xff = none) and the value.  GNU as, AT&T.  Modes: prot32, long64.
        .include "kvmsim.inc"
        .include "emu.inc"

.macro SAVE_FAULT
        movzbl  kvmsim_fault_vector, %eax
        SAVE    %eax
.endm

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        EMU_BEGIN
        MMIO32  0x00, 0x11223344
        movl    $0xffffffff, %ecx
        TRY     movbel 0x00(%ebx), %ecx
        SAVE_FAULT
        SAVE    %ecx
        TRY     movbew 0x00(%ebx), %cx
        SAVE_FAULT
        SAVE    %ecx
        movl    $0xaabbccdd, %edx
        MMIO32  0x04, 0
        TRY     movbel %edx, 0x04(%ebx)
        SAVE_FAULT
        SAVE_BANK 0x04
        MMIO32  0x08, 0
        TRY     movbew %dx, 0x08(%ebx)
        SAVE_FAULT
        SAVE_BANK 0x08
.if KVMSIM_MODE_LONG64
        MMIO64  0x10, 0x0102030405060708
        xorl    %ecx, %ecx
        TRY     movbeq 0x10(%rbx), %rcx
        SAVE_FAULT
        SAVEQ   %rcx
        MMIO64  0x18, 0
        movabsq $0x1122334455667788, %rcx
        TRY     movbeq %rcx, 0x18(%rbx)
        SAVE_FAULT
        SAVEQ_BANK 0x18
.endif
        EXIT    0
