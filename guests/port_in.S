# port_in.S — IN from port 0x60 at each width: 8/16-bit merge, 32-bit zero-extension.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
# The VMM provides a device at port 0x60 that returns PORT_IN_VALUE (default 0x12345678)
# truncated to the access size: inb -> 0x78, inw -> 0x5678, inl -> 0x12345678.
# Before each IN the accumulator holds the pattern 0xaaaaaaaa (long64: 0xaaaaaaaaaaaaaaaa), so
#   in %dx, %al  -> eax = 0xaaaaaa78         (x86.c complete_fast_pio_in: merge below 4 bytes)
#   in %dx, %ax  -> eax = 0xaaaa5678
#   in %dx, %eax -> eax = 0x12345678; long64: rax = 0x0000000012345678 (32-bit write zero-extends)
# Results stay in registers and memory:  rbx = after inb, rsi = after inw, rdi = after inl
# (full 64-bit values in long64) and at symbols in_b / in_w / in_l (8 bytes each).
# Exits: 3 x IN 0x60 (+ serial I/O for the reports), then OUT 0xf4.
# Expect: serial "PASS: ..." x3 + "SUMMARY: 3 tests, 0 failures\n", stop debug-exit code 0.

        .include "kvmsim.inc"

.ifndef PORT_IN_VALUE
PORT_IN_VALUE = 0x12345678
.endif
PORT = 0x60
PATTERN = 0xaaaaaaaa

# Fill the accumulator with the pattern (all 64 bits in long64).
.macro FILL_ACC
.if KVMSIM_MODE_LONG64
        movabsq $0xaaaaaaaaaaaaaaaa, %rax
.else
        movl    $PATTERN, %eax
.endif
.endm

# Copy the accumulator to a register and to memory.
.macro SAVE_ACC reg32, reg64, slot
.if KVMSIM_MODE_LONG64
        movq    %rax, \reg64
        movq    %rax, \slot
.else
        movl    %eax, \reg32
        movl    %eax, \slot
.endif
.endm

        GUEST_ENTRY
        movw    $PORT, %dx

        FILL_ACC
        inb     %dx, %al                # 1-byte IN: only AL changes
        SAVE_ACC %ebx, %rbx, in_b

        FILL_ACC
        inw     %dx, %ax                # 2-byte IN: only AX changes
        SAVE_ACC %esi, %rsi, in_w

        FILL_ACC
        inl     %dx, %eax               # 4-byte IN: EAX (and, in long64, RAX zero-extended)
        SAVE_ACC %edi, %rdi, in_l

.if KVMSIM_MODE_LONG64
        movabsq $(0xaaaaaaaaaaaaaa00 | (PORT_IN_VALUE & 0xff)), %rax
        cmpq    %rax, %rbx
        REPORT  e, "inb merges into AL, rest of RAX kept"
        movabsq $(0xaaaaaaaaaaaa0000 | (PORT_IN_VALUE & 0xffff)), %rax
        cmpq    %rax, %rsi
        REPORT  e, "inw merges into AX, rest of RAX kept"
        movl    $PORT_IN_VALUE, %eax    # zero-extended into RAX
        cmpq    %rax, %rdi
        REPORT  e, "inl zero-extends into RAX"
.else
        cmpl    $(0xaaaaaa00 | (PORT_IN_VALUE & 0xff)), %ebx
        REPORT  e, "inb merges into AL, rest of EAX kept"
        cmpl    $(0xaaaa0000 | (PORT_IN_VALUE & 0xffff)), %esi
        REPORT  e, "inw merges into AX, rest of EAX kept"
        cmpl    $PORT_IN_VALUE, %edi
        REPORT  e, "inl loads EAX"
.endif
        REPORT_SUMMARY

        .data
        .balign 8
in_b:   .quad   0
in_w:   .quad   0
in_l:   .quad   0
