# status_poll.S — a driver's polling loops against registers whose answer changes from read to
# read (the port-sequence and mmio-sequence devices).  GNU as, AT&T.  Mode: long64.
#
#   port 0x64, 1 byte, values 1, 1, 1, 0 then hold:  poll until bit 0 clears → RBX = 4 reads;
#       one more read holds the last value → RCX = 0; then OUT 0xab (the device's last_write)
#   MMIO 0xd0000000, 4 bytes, values 0x80000000, 0x80000000, 0x12345678 then repeat:
#       poll until bit 31 clears → RSI = 3 reads, RDX = 0x12345678; the next read starts over
#       → RDI = 0x80000000; a 1-byte read of offset 3 takes the next value → RBP = 0x80;
#       then a 4-byte write of 0xcafe
        .include "kvmsim.inc"

STATUS_PORT = 0x64
STATUS_MMIO = 0xd0000000

        GUEST_ENTRY
        xorl    %ebx, %ebx
1:      inb     $STATUS_PORT, %al
        incl    %ebx
        testb   $1, %al
        jnz     1b
        movl    $0xffffffff, %eax
        inb     $STATUS_PORT, %al
        movzbl  %al, %ecx
        movb    $0xab, %al
        outb    %al, $STATUS_PORT

        movl    $STATUS_MMIO, %r8d          # above 2 GiB: not a sign-extended disp32
        xorl    %esi, %esi
2:      movl    (%r8), %eax
        incl    %esi
        btl     $31, %eax
        jc      2b
        movl    %eax, %edx
        movl    (%r8), %edi
        movzbl  3(%r8), %ebp
        movl    $0xcafe, (%r8)
        EXIT    0
