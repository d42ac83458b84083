# jump_into_instruction.S — port I/O hidden inside other instructions, reached by a jump into
# their middle: it must exit; the same bytes run from their first byte must not.
# GNU as, AT&T syntax.  Modes: real16, prot32, long64.
#
#   out_in_imm:  b8 e6 80 90 90   movl $0x909080e6, %eax   (real16: movw $0x80e6, %ax; nop; nop)
#                c3               ret
#       from +1:    e6 80         outb %al, $0x80          -> KVM_EXIT_IO out 0x80
#                   90 90 c3      nop; nop; ret
#   in_in_imm:   b8 e4 60 90 90   movl $0x909060e4, %eax   (real16: movw $0x60e4, %ax; nop; nop)
#                c3               ret
#       from +1:    e4 60         inb $0x60, %al           -> KVM_EXIT_IO in 0x60 (device: 0x78)
#   across_two:  b1 e6            movb $0xe6, %cl
#                b2 90            movb $0x90, %dl
#                c3               ret
#       from +1:    e6 b2         outb %al, $0xb2          (opcode in one instruction, port in the next)
#                   90 c3         nop; ret
# Each routine is first called from its start (no exit; the MOV results are checked), then
# from +1 (by an indirect call, so nothing before the run names that address).
# Exits (besides serial): out 0x80 = 22, in 0x60, out 0xb2 = 33, out 0xf4.  The port devices'
# counters prove that the calls from the start did not exit: 0x80 and 0xb2 see one write
# each, 0x60 one read.
# Expect: serial PASS x6 + "SUMMARY: 6 tests, 0 failures\n", debug-exit 0.

        .include "kvmsim.inc"

# call the address in EBX/RBX (an indirect call: the target is a run-time value)
.macro CALL_EBX
.if KVMSIM_MODE_LONG64
        call    *%rbx
.elseif KVMSIM_MODE_REAL16
        call    *%bx
.else
        call    *%ebx
.endif
.endm

.if KVMSIM_MODE_REAL16
MOV_OUT = 0x80e6
MOV_IN  = 0x60e4
.else
MOV_OUT = 0x909080e6
MOV_IN  = 0x909060e4
.endif

        GUEST_ENTRY
        # ---- OUT in an immediate
        movb    $0x11, %al
        call    out_in_imm              # from the start: a MOV, no exit
        cmpl    $MOV_OUT, %eax
        REPORT  e, "out_in_imm from its start is a MOV"
        movl    $out_in_imm + 1, %ebx
        movl    $0x22, %eax
        CALL_EBX                        # into the middle: OUT 0x80 = 22
        cmpl    $0x22, %eax
        REPORT  e, "out_in_imm+1 is an OUT (EAX kept)"

        # ---- IN in an immediate
        movl    $0, %eax
        call    in_in_imm
        cmpl    $MOV_IN, %eax
        REPORT  e, "in_in_imm from its start is a MOV"
        movl    $in_in_imm + 1, %ebx
        movl    $0x5500, %eax
        CALL_EBX                        # IN 0x60: AL = 0x78, the rest of EAX kept
        cmpl    $0x5578, %eax
        REPORT  e, "in_in_imm+1 is an IN"

        # ---- OUT spanning two instructions
        movb    $0x33, %al
        movl    $0, %ecx
        movl    $0, %edx
        call    across_two
        cmpl    $0xe6, %ecx             # CL = e6 (rest of ECX 0), DL = 90
        sete    %cl
        cmpb    $0x90, %dl
        sete    %dl
        andb    %dl, %cl
        cmpb    $1, %cl
        REPORT  e, "across_two from its start is two MOVs"
        movl    $0, %ecx
        movl    $across_two + 1, %ebx
        CALL_EBX                        # OUT 0xb2 = 33
        cmpl    $0, %ecx
        REPORT  e, "across_two+1 is an OUT (CL untouched)"
        REPORT_SUMMARY

out_in_imm:
.if KVMSIM_MODE_REAL16
        movw    $MOV_OUT, %ax
        nop
        nop
.else
        movl    $MOV_OUT, %eax
.endif
        ret

in_in_imm:
.if KVMSIM_MODE_REAL16
        movw    $MOV_IN, %ax
        nop
        nop
.else
        movl    $MOV_IN, %eax
.endif
        ret

across_two:
        movb    $0xe6, %cl
        movb    $0x90, %dl
        ret
