# cpl3_user_pages.S — CPL3 code on pages the boot page tables mark user-accessible (scenario
# paging.user: the first 2 MiB and 4-6 MiB), without touching the page tables itself.
# GNU as, AT&T.  Mode: long64 only.
#
# Set-up (CPL0): the CPL3 GDT of kvmsim.inc, TSS.RSP0 and an I/O bitmap that allows only the
# debug-exit port, a word at 0x400000, then IRETQ to CPL3 with IOPL 0.  At CPL3 (RESULTS):
#   +0x00  CS.RPL seen at CPL3 (the CPL)                          3
#   +0x04  load from 0x200000 (a supervisor page) → fault vector   0x0e, +0x08 error code 0x5 (P|U)
#   +0x0c  store to 0x200000 → fault vector                         0x0e, +0x10 error code 0x7 (P|W|U)
#   +0x14  load from 0x400000 (a user page) → fault vector          0xff (none), +0x18 the word read
# then EXIT 0 from CPL3.  Without paging.user the first CPL3 fetch faults (#PF 0x15, unhandled).
        .include "kvmsim.inc"
        .include "emu.inc"

.if KVMSIM_MODE_LONG64 == 0
        .error  "cpl3_user_pages.S is long64 only"
.endif

SUPERVISOR_PAGE = 0x200000
USER_PAGE_2     = 0x400000

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        movl    $RESULTS, %edi
        movl    $0xffffffff, %eax
        movl    $8, %ecx
        rep stosl
        movl    $0xc0ffee, USER_PAGE_2
        CPL3_IOMAP_DENY_ALL                 # RSP0 = 0x80000, every port denied ...
        andb    $0x0f, TSS + IOMAP + KVMSIM_EXIT_PORT/8     # ... but 0xf4-0xf7: the 4-byte OUT
        lgdt    gdtr
        movw    $TSS_SEL, %ax
        ltr     %ax
        CPL3_IRETQ user

user:
        movl    $RESULTS, %edi
        movw    %cs, %ax
        andl    $3, %eax
        movl    %eax, (%edi)
        TRY     movl SUPERVISOR_PAGE, %eax
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, 0x04(%edi)
        movl    kvmsim_fault_error, %eax
        movl    %eax, 0x08(%edi)
        TRY     movl %eax, SUPERVISOR_PAGE
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, 0x0c(%edi)
        movl    kvmsim_fault_error, %eax
        movl    %eax, 0x10(%edi)
        movl    $0, %eax
        TRY     movl USER_PAGE_2, %eax
        movl    %eax, 0x18(%edi)
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, 0x14(%edi)
        EXIT    0

        .data
        CPL3_GDT
