# invalid_state_real.S — real mode that VMX cannot run as virtual-8086 mode: the scenario starts the
# vCPU with DS at a 4 GiB limit (big real mode), so with kvm_intel.unrestricted_guest=0 KVM cannot
# enter the guest and emulates every instruction (handle_invalid_guest_state, EMULTYPE 0) until the
# state is valid again: here once MOV CR0 sets PE (protected mode accepts these segment caches:
# CS and SS with RPL = DPL 0, DS's limit is not checked), so the far jump and the rest run on the
# CPU.  Real mode (boot layout: image at 0x1000, CS = 0), GNU as, AT&T.
#   real mode: 18 instructions (an OUT of 'R' to the serial port, a 5-round LOOP adding 3 to EBX,
#   LGDT, the MOV CR0 that sets PE)   protected mode: the far jump, segment loads, a 7-round LOOP
#   adding 5 to ESI, then EXIT 0 (OUT to 0xf4).
        .include "kvmsim.inc"

        GUEST_ENTRY
        movw    $0x3f8, %dx
        movb    $'R', %al
        outb    %al, %dx
        movl    $5, %ecx
1:      addl    $3, %ebx
        loop    1b
        lgdtl   gdt_ptr
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmpl   $0x08, $pm32

        .code32
pm32:   movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movl    $7, %ecx
2:      addl    $5, %esi
        loop    2b
        movl    $0, %eax
        outl    %eax, $0xf4
        hlt

        .balign 8
gdt:    .quad   0
        .quad   0x00cf9b000000ffff              # 0x08 code32 flat
        .quad   0x00cf93000000ffff              # 0x10 data flat
gdt_ptr:
        .word   gdt_ptr - gdt - 1
        .long   gdt
