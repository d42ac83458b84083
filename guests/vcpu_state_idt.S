# vcpu_state_idt.S — descriptor-table registers from the scenario (vcpu.sregs.idt / gdt).
# GNU as, AT&T syntax.  Mode: long64.
#
# The scenario moves the IDT to IDT_BASE with limit IDT_LIMIT (boot.py's is at 0x3000).  The
# guest reads IDTR and GDTR back (SIDT/SGDT), writes a #UD gate into the IDT it found, and
# raises #UD (UD2): the handler counts it in EBX and returns past the UD2.
# Exits: serial I/O (REPORT lines), then OUT 0xf4 = number of failures.

        .include "kvmsim.inc"

        GUEST_ENTRY
        sidt    idtr
        cmpw    $IDT_LIMIT, idtr
        REPORT  e, "IDT limit from vcpu.sregs.idt"
        movq    idtr + 2, %rax
        cmpq    $IDT_BASE, %rax
        REPORT  e, "IDT base from vcpu.sregs.idt"
        sgdt    gdtr
        movq    gdtr + 2, %rax
        cmpq    $KVMSIM_GDT_BASE, %rax
        REPORT  e, "GDT base kept from the boot set-up"
        movq    idtr + 2, %rdi          # the #UD gate (64-bit interrupt gate, IST 0) in that IDT
        addq    $UD_VECTOR * 16, %rdi
        movl    $ud_handler, %edx
        movw    %dx, (%rdi)
        movw    $KVMSIM_KERNEL_CS64, 2(%rdi)
        movw    $0x8e00, 4(%rdi)
        shrl    $16, %edx
        movw    %dx, 6(%rdi)
        movq    $0, 8(%rdi)
        xorl    %ebx, %ebx
        ud2
        cmpl    $1, %ebx
        REPORT  e, "#UD delivered through the scenario's IDT"
        REPORT_SUMMARY

ud_handler:
        incl    %ebx
        addq    $2, (%rsp)              # return past the UD2
        iretq

        .data
        .balign 8
idtr:   .skip   10
gdtr:   .skip   10
