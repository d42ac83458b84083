# emu_string.S — MOVS/STOS/LODS/CMPS/SCAS, single and REP/REPE/REPNE, forwards and
# backwards (DF), with the source and/or destination in MMIO.  GNU as, AT&T.  Modes: prot32,
# long64.  Final ESI/EDI/ECX, the compare flags and the copied bytes go to RESULTS.
        .include "kvmsim.inc"
        .include "emu.inc"

RAMBUF = 0x98000

# The string instructions own ESI/EDI, so this guest keeps its RESULTS pointer in EBP.
.macro SAVEP reg
        movl    \reg, (%ebp)
        addl    $4, %ebp
.endm

.macro SAVE_FLAGS_P
        pushf
        BYMODE  "popq %rax", "popl %eax"
        andl    $FL_ALL, %eax
        SAVEP   %eax
.endm

        GUEST_ENTRY
        movl    $MMIO_BASE, %ebx
        movl    $RESULTS, %ebp
        # fill bank 0x00-0x1f with 0x00..0x1f (STOS from a register, forwards)
        movl    $MMIO_BASE, %edi
        movl    $0x03020100, %eax
        movl    $8, %ecx
1:      stosl
        addl    $0x04040404, %eax
        loop    1b
        movl    %edi, %eax
        subl    $MMIO_BASE, %eax
        movl    %eax, RAMBUF + 0x200
        # REP MOVSB MMIO -> RAM
        cld
        movl    $MMIO_BASE + 1, %esi
        movl    $RAMBUF, %edi
        movl    $13, %ecx
        rep movsb
        movl    %esi, RAMBUF + 0x204
        movl    %edi, RAMBUF + 0x208
        # REP MOVSL RAM -> MMIO (+0x40)
        movl    $RAMBUF, %esi
        movl    $MMIO_BASE + 0x40, %edi
        movl    $3, %ecx
        rep movsl
        movl    %edi, RAMBUF + 0x20c
        # MOVSW MMIO -> MMIO, backwards
        std
        movl    $MMIO_BASE + 0x1e, %esi
        movl    $MMIO_BASE + 0x5e, %edi
        movl    $4, %ecx
        rep movsw
        cld
        movl    %esi, RAMBUF + 0x210
        movl    %edi, RAMBUF + 0x214
        # REP STOSW to MMIO, LODSL/LODSB from MMIO
        movl    $MMIO_BASE + 0x70, %edi
        movw    $0xbeef, %ax
        movl    $5, %ecx
        rep stosw
        movl    $MMIO_BASE + 0x08, %esi
        lodsl
        movl    %eax, RAMBUF + 0x218
        std
        lodsb
        cld
        movl    %eax, RAMBUF + 0x21c
        movl    %esi, RAMBUF + 0x220
        # REPE CMPSB MMIO vs RAM: stops at the first difference
        movb    $0xff, RAMBUF + 5
        movl    $MMIO_BASE + 1, %esi
        movl    $RAMBUF, %edi
        movl    $13, %ecx
        SET_FLAGS 0x2
        repe cmpsb
        SAVE_FLAGS_P
        SAVEP   %ecx
        SAVEP   %edi
        subl    $MMIO_BASE, %esi
        SAVEP   %esi
        # REPNE SCASW over MMIO for 0xbeef: found after 1
        movl    $MMIO_BASE + 0x6e, %edi
        movw    $0xbeef, %ax
        movl    $10, %ecx
        repne scasw
        movl    %edi, %edx
        SAVE_FLAGS_P
        SAVEP   %ecx
        subl    $MMIO_BASE, %edx
        SAVEP   %edx
        # REPE SCASL: runs off the end (ECX = 0)
        movl    $MMIO_BASE + 0x70, %edi
        movl    $0xbeefbeef, %eax
        movl    $2, %ecx
        repe scasl
        movl    %edi, %edx
        SAVE_FLAGS_P
        SAVEP   %ecx
        subl    $MMIO_BASE, %edx
        SAVEP   %edx
        # CMPSL single
        movl    $MMIO_BASE + 0x40, %esi
        movl    $MMIO_BASE + 0x00, %edi
        cmpsl
        SAVE_FLAGS_P
        # REP with ECX = 0: nothing happens
        xorl    %ecx, %ecx
        movl    $MMIO_BASE + 0x80, %edi
        rep stosb
        movl    %edi, %edx
        subl    $MMIO_BASE, %edx
        SAVEP   %edx
        # copy the RAM side and the bank into RESULTS
        movl    %ebp, %edi
        movl    $RAMBUF, %esi
        movl    $16, %ecx
        rep movsb
        movl    $RAMBUF + 0x200, %esi
        movl    $10, %ecx
        rep movsl
        movl    $MMIO_BASE + 0x40, %esi
        movl    $16, %ecx
        rep movsl
        movl    $MMIO_BASE + 0x00, %esi
        movl    $16, %ecx
        rep movsl
        EXIT    0
