# cs_limit_real16.S — code that runs off the end of its 64 KiB segment in real mode.
# GNU as, AT&T syntax.  Mode: real16.
#
# Sixteen NOPs are copied to 0000:FFF0 and the guest jumps there.  After the last NOP, IP would
# be 0x10000, beyond CS's limit 0xFFFF: a 386 or later raises #GP(0) there (an 8086 wrapped IP to
# 0).  The IVT's #GP vector points at gp_handler, which exits with the faulting CS:IP in EAX
# (CS << 16 | IP; the IP pushed is the fetch address's low 16 bits, 0) and 13 in EBX.
# Exits: OUT 0xf4 once, from the #GP handler.  Expect: stop debug-exit code 0, rbx 13.

        .include "kvmsim.inc"

        GUEST_ENTRY
        .code16
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    $gp_handler, GP_VECTOR * 4
        movw    %ax, GP_VECTOR * 4 + 2
        movw    $0xfff0, %di
        movw    $16, %cx
        movb    $0x90, %al
        cld
        rep stosb
        movl    $0x5a5a5a5a, %ebx
        ljmp    $0, $0xfff0

gp_handler:
        movl    $GP_VECTOR, %ebx
        popw    %ax                 # IP
        popw    %dx                 # CS
        movzwl  %ax, %eax
        shll    $16, %edx
        orl     %edx, %eax
        EXIT_EAX
