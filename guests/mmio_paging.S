# mmio_paging.S — the emulator translates guest-linear addresses through the guest's own page
# tables (4-level; 1 GiB, 2 MiB and 4 KiB pages) and injects #PF when a page is absent.
# GNU as, AT&T.  Mode: long64.  Regbank at MMIO_BASE (0xd0000000).
#
# PML4[1] (linear 0x80_0000_0000) → PDPT' 0x10000:
#   PDPT'[0] 1 GiB page → GPA 0xc0000000   L1G = 0x8010000000 → 0xd0000000
#   PDPT'[1] → PD' 0x11000:
#     PD'[0] 2 MiB page → GPA 0xd0000000    L2M = 0x8040000000 → 0xd0000000
#     PD'[1] → PT' 0x12000:
#       PT'[0] → 0xd0000000                 L4K = 0x8040200000 → 0xd0000000
#       PT'[1] → RAM 0x190000               L4K+0x1000
#       PT'[2] not present                  L4K+0x2000
# Exits (phys_addr is the GPA, never the linear address):
#   read 4 @0xd0000004 (1G), write 4 @0xd0000008 (2M), read 4 @0xd000000c (4K),
#   rep movsb x4 MMIO → RAM through the 4K pages: reads @0xd0000010..13 (RAM 0x190000 gets them),
#   rep movsb x4 MMIO → L4K+0x2000: read @0xd0000010, then the NO_DECODE pass writes to an
#   absent page → #PF injected, error code 0x2 (write, not present, CPL0), CR2 = L4K+0x2000,
#   RCX/RSI/RDI unchanged (no register writeback on a fault).
# Results: ECX, EDX = values read; R8 = #PF error code, R9 = CR2, R10 = RCX after the fault;
# R11 = 1 if the guest's CPUID has Page1GB and the 1 GiB page was used (else the 2 MiB one).
        .include "kvmsim.inc"
        .include "mmio.inc"

.if KVMSIM_MODE_LONG64 == 0
        .error  "mmio_paging.S builds 4-level page tables: long64 only"
.endif

PML4    = 0x4000                            # boot.py's PML4
PDPT1   = 0x10000
PD1     = 0x11000
PT1     = 0x12000
RAMPAGE = 0x190000
L1G     = 0x8010000000
L2M     = 0x8040000000
L4K     = 0x8040200000

.macro PTE slot, value
        movabsq $(\value), %rax
        movq    %rax, \slot
.endm

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        PTE     PML4+8,  PDPT1 | 0x3        # present, writable
        PTE     PDPT1,   0xc0000000 | 0x83  # 1 GiB page (PS)
        PTE     PDPT1+8, PD1 | 0x3
        PTE     PD1,     0xd0000000 | 0x83  # 2 MiB page (PS)
        PTE     PD1+8,   PT1 | 0x3
        PTE     PT1,     0xd0000000 | 0x3   # 4 KiB pages
        PTE     PT1+8,   RAMPAGE | 0x3
        movq    %cr3, %rax                  # flush the TLB
        movq    %rax, %cr3

        movl    $0x80000001, %eax           # 1 GiB pages need CPUID Page1GB (EDX bit 26);
        cpuid                               # without it PDPTE.PS is reserved (#PF RSVD), so
        xorl    %r11d, %r11d                # read the same GPA through the 2 MiB page instead
        movabsq $L2M, %rbx
        btl     $26, %edx
        jnc     1f
        movl    $1, %r11d                   # R11 = 1: the 1 GiB page was used
        movabsq $L1G, %rbx
1:      movl    4(%rbx), %ecx               # read  0xd0000004 via the 1 GiB page
        movabsq $L2M, %rbx
        movl    $0x5a5a, 8(%rbx)            # write 0xd0000008 via the 2 MiB page
        movabsq $L4K, %rbx
        movl    0xc(%rbx), %edx             # read  0xd000000c via a 4 KiB page

        pushq   %rcx
        leaq    0x10(%rbx), %rsi            # MMIO → RAM, both through 4 KiB pages
        leaq    0x1000(%rbx), %rdi
        movl    $4, %ecx
        cld
        rep movsb
        popq    %rcx
        cmpl    $0x13121110, RAMPAGE        # the bank's bytes landed in the RAM page
        FAIL_IF_NE 1

        pushq   %rcx
        leaq    0x10(%rbx), %rsi            # MMIO → absent page: the emulator's #PF
        leaq    0x2000(%rbx), %rdi
        movl    $4, %ecx
        EXPECT_FAULT PF_VECTOR, rep movsb
        FAIL_IF_NE 2
        movq    %rcx, %r10
        popq    %rcx
        movl    kvmsim_fault_error, %r8d
        movq    %cr2, %r9
        EXIT    0
