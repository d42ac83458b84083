# shadow_paging.S — a long64 guest under shadow paging (kvm: {enable_ept: false}).  GNU as, AT&T.
# boot.py's tables: PML4 0x4000, PDPT 0x5000, PDs 0x6000-0x9fff (2 MiB pages, identity, 0-4 GiB);
# KVM write-protects all of them (upper-level shadow pages).  Regbank at MMIO_BASE (0xd0000000).
#
#  1. MMIO read: #PF exit (SPTE not present) → noslot → MMIO SPTE, EMULTYPE_PF → KVM_EXIT_MMIO;
#     read again and write: #PF exits with RSVD (the MMIO SPTE) → EMULTYPE_PF.
#  2. INVLPG (an INVLPG exit) drops the MMIO SPTE: the next read is a not-present #PF again.
#  3. An absent page (PML4[1] = 0): the shadow MMU's walk fails, #PF injected: error 0, CR2.
#  4. MOV to PD[1] (clearing R/W of 0x200000-0x3fffff): a write-protection #PF, emulated with
#     EMULTYPE_PF | ALLOW_RETRY_PF (MOV writes page tables); the write to 0x200100 then takes the
#     guest's #PF: error 3 (P|W), CR2 0x200100.
#  5. MOV: R/W back; INVLPG; the write to 0x200100 works.  ADD to PD1 (1-2 GiB): not a page-table-
#     writing instruction: KVM unprotects PD1 and the guest re-executes the ADD natively; a MOV to
#     PD1 then takes no exit.
#  6. MOV from/to CR3 with the same value: CR3 exits, a TLB flush, the same root.
#  7. Four MOVs to PD2 (2-3 GiB): three emulated, the third is write flooding (PD2 zapped: no fault
#     through it reset the count), the fourth native.  (A PD that maps its own page, as PD0 does,
#     has its count reset by every #PF exit's walk.)
# Results: ECX/EDX/ESI = MMIO reads; R8 = #PF error (3), R9 = its CR2; R10 = #PF error (4),
# R11 = its CR2.
        .include "kvmsim.inc"
        .include "mmio.inc"

.if KVMSIM_MODE_LONG64 == 0
        .error  "shadow_paging.S uses boot.py's 4-level tables: long64 only"
.endif

PD0     = 0x6000                    # boot.py's PDs: 0-1 GiB, 1-2 GiB, 2-3 GiB
PD1     = 0x7000
PD2     = 0x8000
ABSENT  = 0x8000001234              # PML4[1] is not present
RO_ADDR = 0x200100                  # in PD0[1]'s 2 MiB page

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        movl    $MMIO_BASE, %ebx
        movl    4(%rbx), %ecx               # 1: not-present #PF, MMIO SPTE made
        movl    0xc(%rbx), %edx             #    RSVD #PF
        movl    $0x5a5a, 8(%rbx)            #    RSVD #PF, a write
        invlpg  (%rbx)                      # 2: INVLPG exit: the MMIO SPTE goes
        movl    0x10(%rbx), %esi            #    not-present #PF again

        movabsq $ABSENT, %rdi               # 3: the guest's own #PF
        EXPECT_FAULT PF_VECTOR, movl (%rdi), %eax
        FAIL_IF_NE 1
        movl    kvmsim_fault_error, %r8d
        movq    %cr2, %r9

        movq    PD0+8, %rax                 # 4: clear R/W in PD0[1]: emulated MOV
        andq    $~2, %rax
        movq    %rax, PD0+8
        EXPECT_FAULT PF_VECTOR, movl $1, RO_ADDR
        FAIL_IF_NE 2
        movl    kvmsim_fault_error, %r10d
        movq    %cr2, %r11

        movq    PD0+8, %rax                 # 5: R/W back (emulated MOV), INVLPG, the write works
        orq     $2, %rax
        movq    %rax, PD0+8
        invlpg  RO_ADDR
        EXPECT_NO_FAULT movl $1, RO_ADDR
        FAIL_IF_NE 3
        addq    $0, PD1                     #    ADD to PD1: unprotect and retry, then native
        movq    PD1, %rax
        movq    %rax, PD1                   #    PD1 is no longer shadowed: native, no exit

        movq    %cr3, %rdx                  # 6: CR3 store and load exits (the same root: a TLB flush)
        movq    %rdx, %cr3
        movq    PD2, %rax                   # 7: write flooding on PD2 (a page that does not map itself)
        movq    %rax, PD2                   #    emulated (1)
        movq    %rax, PD2                   #    emulated (2)
        movq    %rax, PD2                   #    emulated (3): flooding, PD2 zapped
        movq    %rax, PD2                   #    native
        movl    $MMIO_BASE, %edx
        movl    0x10(%rdx), %edx            # the MMIO SPTE is still there: RSVD #PF
        EXIT    0
