# selfmod_code.S — code written at run time must exit when it executes (issue 9 point 1).
# GNU as, AT&T syntax.  Modes: prot32, long64 (real-mode run-time copies are
# runtime_copied_io.S's job).
#
# Three cases, each marked by its own port so the exit stream says which one exited:
#   1. fresh page: OUT written into a page never executed before (`fresh`, in .bss), called:
#        b0 11        movb $0x11, %al
#        e6 80        outb %al, $0x80           -> KVM_EXIT_IO out port 0x80 data 11
#        c3           ret
#      then the same page rewritten into an IN and called again (a different exit):
#        e4 60        inb $0x60, %al            -> KVM_EXIT_IO in port 0x60 (device: 0x78)
#        c3           ret
#   2. in place: `site` in .text runs first as five NOPs and a RET (no exit), then the guest
#      overwrites those same bytes, at an address already executed, with
#        b0 22 e6 81 90 c3                      -> KVM_EXIT_IO out port 0x81 data 22
#      and calls it again.
#   3. one routine rewritten twice: `fresh+0x800` gets an OUT 0x82 (data 33) and is called, then
#      two of its bytes are patched (data 44, port 0x83) and it is called again.
# The REPORTs check what the guest can see (AL); that each OUT/IN exited is the scenario's
# userspace expectation.
# A loader or scan that looked at the image before the run sees none of these OUT/INs.
# Exits (besides serial): out 0x80=11, in 0x60, out 0x81=22, out 0x82=33, out 0x83=44, out 0xf4.
# Expect: serial PASS x3 + "SUMMARY: 3 tests, 0 failures\n", debug-exit 0.

        .include "kvmsim.inc"

# call the routine whose address is in EAX/RAX
.macro CALL_EAX
.if KVMSIM_MODE_LONG64
        call    *%rax
.else
        call    *%eax
.endif
.endm

        GUEST_ENTRY
        # ---- 1. a page never executed before: OUT, then rewritten into IN
        movl    $fresh, %edi
        movl    $0x80e611b0, (%edi)     # b0 11 e6 80
        movb    $0xc3, 4(%edi)          # c3
        movl    %edi, %eax
        CALL_EAX                        # exit: out 0x80
        movl    $0x90c360e4, (%edi)     # e4 60 c3 90
        movl    %edi, %eax
        CALL_EAX                        # exit: in 0x60 -> AL = 0x78
        cmpb    $0x78, %al
        REPORT  e, "rewritten page runs the IN"

        # ---- 2. the same bytes, already executed as NOPs, rewritten in place
        call    site                    # five NOPs: no exit
        movl    $site, %edi
        movl    $0x81e622b0, (%edi)     # b0 22 e6 81
        movw    $0xc390, 4(%edi)        # 90 c3
        call    site                    # exit: out 0x81
        cmpb    $0x22, %al
        REPORT  e, "patched site ran the OUT"

        # ---- 3. two rewrites of one routine, each called at once
        movl    $fresh + 0x800, %edi
        movl    $0x82e633b0, (%edi)     # b0 33 e6 82
        movb    $0xc3, 4(%edi)
        movl    %edi, %eax
        CALL_EAX                        # exit: out 0x82
        movb    $0x44, 1(%edi)          # b0 44 ..
        movb    $0x83, 3(%edi)          # .. e6 83
        movl    %edi, %eax
        CALL_EAX                        # exit: out 0x83
        cmpb    $0x44, %al
        REPORT  e, "second rewrite ran"
        REPORT_SUMMARY

site:   nop
        nop
        nop
        nop
        nop
        ret

        .bss
        .balign 4096
fresh:  .space  4096
