# runtime_copied_io.S — IN/OUT copied into a buffer at run time and executed there, as
# kvm-unit-tests' x86/realmode.c does: exec_in_big_real_mode() copies each test's bytes
# (MK_INSN) into the 32-byte `test_insn` slot inside its own code, pads the rest with NOPs
# and runs through it.  GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# The six snippets are realmode.c's test_io (io_test1..6): OUT then IN at port 0xe0, by
# immediate and by DX, at 1, 2 and 4 bytes.  They sit in .rodata and never run there; the slot
# in .text holds zeros (realmode.c's `. = . + 32`) until the first copy.  The VMM's device at
# 0xe0 returns 0x89abcdef truncated to the access size.
# Exits (besides serial): per snippet OUT 0xe0 (ff / ffff / ffffffff) then IN 0xe0, x2; OUT 0xf4.
# Expect: serial PASS x6 + "SUMMARY: 6 tests, 0 failures\n", debug-exit 0.

        .include "kvmsim.inc"

PORT = 0xe0

# MK_INSN name, "asm": the snippet's bytes between name_start and name_end in .rodata.
.macro MK_INSN name, text
        .pushsection .rodata, "a"
\name\()_start:
        \text
\name\()_end:
        .popsection
.endm

# Copy snippet `name` into the slot, run it with EAX = 0, compare EAX with `want`.
.macro EXEC_COPIED name, want, msg
        movl    $\name\()_start, %esi
        movl    $\name\()_end, %ecx
        call    copy_to_slot
        xorl    %eax, %eax
        call    test_insn               # the copy runs here
        cmpl    $(\want), %eax
        REPORT  e, "\msg"
.endm

        GUEST_ENTRY
        MK_INSN io_test1, "movb $0xff, %al; outb %al, $PORT; movb $0x00, %al; inb $PORT, %al"
        MK_INSN io_test2, "movw $0xffff, %ax; outw %ax, $PORT; movw $0x0000, %ax; inw $PORT, %ax"
        MK_INSN io_test3, "movl $0xffffffff, %eax; outl %eax, $PORT; movl $0, %eax; inl $PORT, %eax"
        MK_INSN io_test4, "movw $PORT, %dx; movb $0xff, %al; outb %al, %dx; movb $0x00, %al; inb %dx, %al"
        MK_INSN io_test5, "movw $PORT, %dx; movw $0xffff, %ax; outw %ax, %dx; movw $0, %ax; inw %dx, %ax"
        MK_INSN io_test6, "movw $PORT, %dx; movl $0xffffffff, %eax; outl %eax, %dx; movl $0, %eax; inl %dx, %eax"

        EXEC_COPIED io_test1, 0xef, "pio 1"
        EXEC_COPIED io_test2, 0xcdef, "pio 2"
        EXEC_COPIED io_test3, 0x89abcdef, "pio 3"
        EXEC_COPIED io_test4, 0xef, "pio 4"
        EXEC_COPIED io_test5, 0xcdef, "pio 5"
        EXEC_COPIED io_test6, 0x89abcdef, "pio 6"
        REPORT_SUMMARY

# copy_to_slot: bytes [ESI, ECX) to test_insn, the rest of the slot NOPs (realmode.c's loop).
copy_to_slot:
        movl    $test_insn, %edi
        COPY_BYTES %ecx
2:      cmpl    $test_insn_end, %edi
        je      3f
        movb    $0x90, (%edi)
        incl    %edi
        jmp     2b
3:      ret

# The slot: zeros in the image, run only after a copy.
test_insn:
        .fill   32, 1, 0
test_insn_end:
        ret
