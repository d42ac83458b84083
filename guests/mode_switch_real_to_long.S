# mode_switch_real_to_long.S — from the reset vector to 64-bit mode by the guest's own steps,
# as firmware does: no boot set-up by the VMM (guest mode "reset"), the image is the 64 KiB
# ROM just below 4 GiB (a KVM_MEM_READONLY memslot), RAM at 0-2 MiB.
#   0xfffffff0  JMP to rom_start (CS f000, base 0xffff0000: the reset state)
#   real mode   LGDT from ROM, CR0.PE = 1, far JMP to a flat 32-bit code segment
#   prot32      flat data segments, page tables in RAM (identity map of 0-4 GiB, 2 MiB pages),
#               CR4.PAE, WRMSR EFER.LME, CR0.PG (EFER.LMA follows), far JMP to a 64-bit segment
#   long64      8-byte MMIO write of 0x0123456789abcdef at 0xd0000000 (KVM_EXIT_MMIO len 8),
#               MOV CR8 write of 5 and read-back into RDX, then EXIT 0 (1 if CR8 did not read back)
# Observable: the MMIO write data efcdab8967452301, RAX = 0x0123456789abcdef, RDX = 5.
# The GDT lives in the ROM with its accessed bits set, so no descriptor write ever hits the ROM.

ROM_BASE  = 0xffff0000
PML4      = 0x10000          # PML4, PDPT, then 4 page directories (RAM is zero-filled)
PDPT      = 0x11000
PD        = 0x12000
MMIO_ADDR = 0xd0000000
EXIT_PORT = 0xf4

        .text
        .code16
rom_start:
        cli
        lgdtl   %cs:(gdt_ptr - rom_start)
        movl    %cr0, %eax
        orl     $1, %eax                        # CR0.PE
        movl    %eax, %cr0
        ljmpl   $0x08, $prot32

        .code32
prot32:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movl    $0x80000, %esp
        movl    $PDPT | 3, PML4                 # PML4[0] -> PDPT
        xorl    %ecx, %ecx
1:      leal    PD(,%ecx,8), %eax               # PDPT[i] -> PD i (i < 4), i*0x1000 = i*8*512
        shll    $9, %eax
        subl    $PD << 9, %eax
        addl    $PD | 3, %eax
        movl    %eax, PDPT(,%ecx,8)
        incl    %ecx
        cmpl    $4, %ecx
        jne     1b
        xorl    %ecx, %ecx                      # 2048 PDEs: 2 MiB pages covering 0-4 GiB
2:      movl    %ecx, %eax
        shll    $21, %eax
        orl     $0x83, %eax                     # present, writable, 2 MiB
        movl    %eax, PD(,%ecx,8)
        incl    %ecx
        cmpl    $2048, %ecx
        jne     2b
        movl    $PML4, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $0x20, %eax                     # CR4.PAE
        movl    %eax, %cr4
        movl    $0xc0000080, %ecx
        rdmsr
        orl     $0x100, %eax                    # EFER.LME
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000000, %eax               # CR0.PG: EFER.LMA = 1
        movl    %eax, %cr0
        ljmpl   $0x18, $long64

        .code64
long64:
        movabsq $0x0123456789abcdef, %rax
        movl    $MMIO_ADDR, %ebx
        movq    %rax, (%rbx)
        movl    $5, %ecx
        movq    %rcx, %cr8
        xorl    %edx, %edx
        movq    %cr8, %rdx
        movl    $1, %edi
        cmpq    $5, %rdx
        jne     3f
        xorl    %edi, %edi
3:      movl    %edi, %eax
        outl    %eax, $EXIT_PORT
4:      hlt
        jmp     4b

        .balign 8
gdt:    .quad   0
        .quad   0x00cf9b000000ffff              # 0x08 flat code32 (accessed)
        .quad   0x00cf93000000ffff              # 0x10 flat data (accessed)
        .quad   0x00af9b000000ffff              # 0x18 code64 (accessed)
gdt_end:
gdt_ptr:
        .word   gdt_end - gdt - 1
        .long   gdt

        .org    0xfff0                          # the reset vector: 0xfffffff0
        .code16
reset_vector:
        jmp     rom_start
        .org    0x10000
