# acpi_pm_timer.S — how kvm-unit-tests finds and reads the ACPI PM timer (lib/acpi.c,
# x86/vmexit.c inl_pmtimer), then ends as its exit() does with no isa-debug-exit device: the
# code to port 0xf4 (nothing there), then "Shutdown" byte by byte to the Bochs port 0x8900.
# GNU as, AT&T.  Modes: prot32, long64 (32-bit addressing everywhere).
#
#   scan 0xe0000-0xfffff on 16-byte steps for "RSD PTR ", check its checksum, follow
#   rsdt_physical_address (RSDP+16) to the RSDT, its entries to the table signed "FACP", and
#   read pm_tmr_blk (FADT+76) → EBP.  Then two `inl` of the timer → ESI, EDI with a 1000-round
#   loop between them (a 24-bit count at 3.579545 MHz: the second is ahead of the first).
#   EBX = the failure count at the end.
        .include "kvmsim.inc"

SHUTDOWN_PORT = 0x8900

        GUEST_ENTRY
        movl    $0xe0000, %edx              # get_rsdp()
1:      cmpl    $0x20445352, (%edx)         # "RSD "
        jne     2f
        cmpl    $0x20525450, 4(%edx)        # "PTR "
        je      3f
2:      addl    $16, %edx
        cmpl    $0x100000, %edx
        jne     1b
        xorl    %edx, %edx                  # not found
3:      testl   %edx, %edx
        REPORT  ne, "RSDP found in the BIOS area"
        jz      fail_exit
        xorl    %eax, %eax                  # the 20 bytes of an ACPI 1.0 RSDP sum to 0
        xorl    %ecx, %ecx
4:      addb    (%edx,%ecx), %al
        incl    %ecx
        cmpl    $20, %ecx
        jne     4b
        testb   %al, %al
        REPORT  e, "RSDP checksum"
        movl    16(%edx), %esi              # the RSDT
        cmpl    $0x54445352, (%esi)         # "RSDT"
        REPORT  e, "RSDT signature"
        movl    4(%esi), %ecx               # length: the entries follow the 36-byte header
        leal    (%esi,%ecx), %ecx
        leal    36(%esi), %edi
        xorl    %ebp, %ebp
5:      cmpl    %ecx, %edi
        jae     6f
        movl    (%edi), %eax
        addl    $4, %edi
        cmpl    $0x50434146, (%eax)         # "FACP"
        jne     5b
        movl    76(%eax), %ebp              # pm_tmr_blk
6:      testl   %ebp, %ebp
        REPORT  ne, "FADT names the PM timer port"
        jz      fail_exit

        movl    %ebp, %edx                  # two reads of the timer, 1000 rounds apart
        inl     %dx, %eax
        movl    %eax, %esi
        movl    $1000, %ecx
7:      decl    %ecx
        jnz     7b
        inl     %dx, %eax
        movl    %eax, %edi
        subl    %esi, %eax
        andl    $0xffffff, %eax             # 24 bits: the count wraps
        testl   %eax, %eax
        REPORT  nz, "PM timer runs"
        testl   $0xff000000, %edi
        REPORT  z, "PM timer is 24 bits wide"

fail_exit:
        movl    kvmsim_failures, %ebx
        movl    %ebx, %eax                  # exit(): isa-debug-exit first (absent here) ...
        outl    %eax, $0xf4
        movl    $shutdown, %ecx             # ... then the Bochs power-off port
        movw    $SHUTDOWN_PORT, %dx
8:      movb    (%ecx), %al
        testb   %al, %al
        jz      9f
        outb    %al, %dx
        incl    %ecx
        jmp     8b
9:      cli
        hlt
        jmp     9b

        .section .rodata
shutdown: .asciz "Shutdown"
