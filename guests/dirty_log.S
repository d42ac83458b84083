# dirty_log.S — pages the guest writes in a memslot with KVM_MEM_LOG_DIRTY_PAGES, as
# KVM_GET_DIRTY_LOG reports them after the run.  GNU as, AT&T.  Modes: long64, prot32.
#
# The logged memslot is LOG_BASE (scenario: slot 1, 64 KiB, log_dirty: true).  The guest:
#   - stores a dword into pages 0, 2 and 5 (the CPU logs each page once in the PML buffer;
#     a second store into page 2 logs nothing: its EPT dirty flag is already set),
#   - reads page 9 (reads log nothing),
#   - REP STOSB of 8 bytes across the boundary of pages 6 and 7 (both logged),
#   - REP INSB of 4 bytes from port 0x60 into page 12: KVM's emulator writes guest memory
#     itself (mark_page_dirty, no PML),
# then EXIT 0.  Expected dirty pages: 0, 2, 5, 6, 7, 12 of the slot; nothing else.
        .include "kvmsim.inc"

LOG_BASE = 0x200000
PAGE = 0x1000

        GUEST_ENTRY
        movl    $LOG_BASE, %ebx
        movl    $0x11111111, 0*PAGE(%ebx)
        movl    $0x22222222, 2*PAGE(%ebx)
        movl    $0x22222223, 2*PAGE+8(%ebx)
        movl    $0x55555555, 5*PAGE(%ebx)
        movl    9*PAGE(%ebx), %eax
        leal    7*PAGE-4(%ebx), %edi
        movl    $8, %ecx
        movb    $0x67, %al
        cld
        rep stosb
        leal    12*PAGE+16(%ebx), %edi
        movl    $0x60, %edx
        movl    $4, %ecx
        rep insb
        EXIT    0
