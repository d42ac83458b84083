# big_real_mode.S — "big real mode": a descriptor cache outlives the GDT it was loaded from.
# Real mode (boot layout: CS = DS = 0, image at 0x1000).  The guest sets CR0.PE, loads DS and
# ES from a flat 4 GiB data descriptor, clears CR0.PE again, then destroys that GDT (zeroes the
# descriptor, loads GDTR with limit 0) and even reloads DS in real mode (only selector and base
# change there).  DS and ES keep their 4 GiB limit, so 32-bit offsets work in real mode:
#   #1 an ADDR32 MOV to 0xd0000000 (no memslot): KVM emulates it and checks DS.limit = 4 GiB
#      -> KVM_EXIT_MMIO len 4 data 78563412 (a 64 KiB limit would be #GP instead)
#   #2 a dword written at 1 MiB + 16 through DS and read back through ES (RAM above 64 KiB)
#   EXIT 0, with EAX = the value read back.
        .include "kvmsim.inc"

MMIO_ADDR = 0xd0000000

        GUEST_ENTRY
        cli
        lgdtl   gdt_ptr
        movl    %cr0, %eax
        orl     $1, %eax                        # CR0.PE: CS keeps its real-mode cache
        movl    %eax, %cr0
        movw    $0x08, %bx
        movw    %bx, %ds                        # DS, ES <- flat 4 GiB data (from this GDT)
        movw    %bx, %es
        andl    $~1, %eax
        movl    %eax, %cr0                      # back to real mode
        xorl    %eax, %eax
        movw    %ax, %ds                        # real-mode loads: selector 0, base 0, limit kept
        movl    %eax, gdt + 8                   # the GDT is gone: descriptor zeroed,
        movl    %eax, gdt + 12
        lgdtl   gdt_null_ptr                    # and GDTR limit 0
        movl    $MMIO_ADDR, %ebx
        movl    $0x12345678, %eax
        addr32 movl %eax, (%ebx)                # #1: MMIO through DS at a 32-bit offset
        movl    $0x100010, %ebx
        movl    $0xcafef00d, %eax
        addr32 movl %eax, (%ebx)                # #2: RAM above 64 KiB through DS ...
        xorl    %eax, %eax
        addr32 movl %es:(%ebx), %eax            # ... and back through ES
        cmpl    $0xcafef00d, %eax
        jne     1f
        EXIT    0
1:      EXIT    1

        .balign 8
gdt:    .quad   0
        .quad   0x00cf93000000ffff              # 0x08 flat 4 GiB data (accessed)
gdt_end:
gdt_ptr:
        .word   gdt_end - gdt - 1
        .long   gdt
gdt_null_ptr:
        .word   0
        .long   0
