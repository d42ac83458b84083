# emu_bitops.S — BT/BTS/BTR/BTC (register and imm8 bit offsets, including offsets beyond the
# operand, which address other bytes of the bank) and BSF/BSR with an MMIO operand.  GNU as,
# AT&T.  Modes: prot32, long64.  BT* define only CF; BSF/BSR define ZF (the destination is
# left unchanged for a zero source on both vendors' CPUs, but only compared for non-zero).
        .include "kvmsim.inc"
        .include "emu.inc"

        GUEST_ENTRY
        EMU_BEGIN
        MMIO32  0x20, 0x00000010
        MMIO32  0x24, 0x80000000
        MMIO32  0x28, 0
        movl    $4, %ecx
        btl     %ecx, 0x20(%ebx)
        SAVE_FLAGS FL_C
        btsl    $0, 0x20(%ebx)
        SAVE_FLAGS FL_C
        btrw    $4, 0x20(%ebx)
        SAVE_FLAGS FL_C
        btcl    $31, 0x24(%ebx)
        SAVE_FLAGS FL_C
        movl    $63, %ecx                   # register offset: bit 31 of the next dword
        btsl    %ecx, 0x20(%ebx)
        SAVE_FLAGS FL_C
        movl    $-1, %ecx                   # negative offset: bit 31 of the dword before
        btcl    %ecx, 0x24(%ebx)
        SAVE_FLAGS FL_C
        movw    $70, %cx                    # 16-bit: word 4 bits further
        lock btsw %cx, 0x20(%ebx)
        SAVE_FLAGS FL_C
        SAVE_BANK 0x20, 0x24, 0x28
        # BSF / BSR
        MMIO32  0x30, 0x00f00100
        bsfl    0x30(%ebx), %ecx
        SAVE_FLAGS FL_Z
        SAVE    %ecx
        bsrl    0x30(%ebx), %edx
        SAVE_FLAGS FL_Z
        SAVE    %edx
        bsfw    0x32(%ebx), %si
        SAVE_FLAGS FL_Z
        SAVE    %esi
        movl    $0x1234, %ebp
        bsrl    0x28(%ebx), %ebp            # zero source: ZF=1
        SAVE_FLAGS FL_Z
.if KVMSIM_MODE_LONG64
        MMIO64  0x38, 0x8000000100000000
        bsfq    0x38(%rbx), %rcx
        SAVE_FLAGS FL_Z
        SAVEQ   %rcx
        bsrq    0x38(%rbx), %rcx
        SAVEQ   %rcx
        movq    $100, %rdx
        btrq    %rdx, 0x38(%rbx)            # bit 36 of the qword at +0x38
        SAVE_FLAGS FL_C
        btcq    $63, 0x38(%rbx)
        SAVE_FLAGS FL_C
        SAVEQ_BANK 0x38
.endif
        EXIT    0
