# emu_setcc.S — SETcc to an MMIO byte for all 16 conditions, under two flag patterns.
# GNU as, AT&T.  Modes: prot32, long64.  SETcc writes its byte (0 or 1) even when the
# value does not change, so each one is an MMIO write exit.
        .include "kvmsim.inc"
        .include "emu.inc"

.macro ALLCC base
        seto    \base+0x0(%ebx)
        setno   \base+0x1(%ebx)
        setb    \base+0x2(%ebx)
        setae   \base+0x3(%ebx)
        sete    \base+0x4(%ebx)
        setne   \base+0x5(%ebx)
        setbe   \base+0x6(%ebx)
        seta    \base+0x7(%ebx)
        sets    \base+0x8(%ebx)
        setns   \base+0x9(%ebx)
        setp    \base+0xa(%ebx)
        setnp   \base+0xb(%ebx)
        setl    \base+0xc(%ebx)
        setge   \base+0xd(%ebx)
        setle   \base+0xe(%ebx)
        setg    \base+0xf(%ebx)
.endm

        GUEST_ENTRY
        EMU_BEGIN
        SET_FLAGS 0x8c3                     # OF SF ZF CF
        ALLCC   0x00
        SET_FLAGS 0x806                     # OF PF
        ALLCC   0x10
        SET_FLAGS 0x0c6                     # SF ZF PF
        ALLCC   0x20
        movl    $0, %esi
1:      movl    (%esi,%ebx), %eax
        SAVE    %eax
        addl    $4, %esi
        cmpl    $0x30, %esi
        jne     1b
        EXIT    0
