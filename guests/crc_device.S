# crc_device.S — drive a CRC-32 engine that the scenario supplies as a Python device
# (scenarios/crc32_device.py) at MMIO 0xd0001000: DATA at +0, CRC at +4, RESET at +8.
# GNU as, AT&T.  Mode: long64.
#   feed "1234" as one 4-byte write, then "56789" a byte at a time; CRC → RBX = 0xcbf43926
#   (the CRC-32 check value); reset, feed "a", CRC → RCX = 0xe8b7be43.
        .include "kvmsim.inc"

CRC_DEV = 0xd0001000

        GUEST_ENTRY
        movl    $CRC_DEV, %r8d              # above 2 GiB: not a sign-extended disp32
        movl    msg, %eax
        movl    %eax, (%r8)                 # "1234" in one write
        movl    $msg + 4, %esi
1:      movzbl  (%rsi), %eax
        testl   %eax, %eax
        jz      2f
        movb    %al, (%r8)
        incl    %esi
        jmp     1b
2:      movl    4(%r8), %ebx
        movl    $0, 8(%r8)
        movb    $'a', (%r8)
        movl    4(%r8), %ecx
        EXIT    0

        .data
msg:    .asciz  "123456789"
