# platform_devices.S — the platform QEMU gives kvm-unit-tests, as its library and tests use it:
# fw_cfg (lib/x86/fwcfg.c), pc-testdev's latch and IORAM (x86/emulator.c), its IRQ lines
# (x86/realmode.c) and flush port (x86/eventinj.c), and the isa-debug-exit port exit() writes.
# GNU as, AT&T.  Modes: prot32, long64 (32-bit addressing everywhere).
#
# The scenario gives fw-cfg nb_cpus 2 and 2 MiB of RAM; the guest reports each check on the serial
# port, then REPORT_SUMMARY writes 0 (all passed) or 1 to port 0xf4: isa-debug-exit ends the run
# with QEMU's status (value << 1) | 1.  Registers at the end: EBX = NB_CPUS, ESI = the latch,
# EDI = the IORAM dword read back.
        .include "kvmsim.inc"

FW_CFG_CTL  = 0x510
FW_CFG_DATA = 0x511
TESTDEV     = 0xe0
TESTDEV_FLUSH = 0xe4
TESTDEV_IRQ = 0x2000
IORAM       = 0xff000000

# fw_cfg item `key`, `n` bytes (n <= 4) little-endian into EAX, as fwcfg_get_u() assembles them
.macro FWCFG_READ key, n
        movw    $(\key), %ax
        movw    $FW_CFG_CTL, %dx
        outw    %ax, %dx
        movw    $FW_CFG_DATA, %dx
        xorl    %ecx, %ecx
        xorl    %ebx, %ebx
.Lfw\@: inb     %dx, %al
        movzbl  %al, %eax
        shll    %cl, %eax
        orl     %eax, %ebx
        addl    $8, %ecx
        cmpl    $(8 * \n), %ecx
        jne     .Lfw\@
        movl    %ebx, %eax
.endm

        GUEST_ENTRY
        FWCFG_READ 0, 4                     # FW_CFG_SIGNATURE
        cmpl    $0x554d4551, %eax           # "QEMU"
        REPORT  e, "fw_cfg signature QEMU"
        FWCFG_READ 1, 4                     # FW_CFG_ID: bit 0, no DMA
        cmpl    $1, %eax
        REPORT  e, "fw_cfg id 1"
        FWCFG_READ 3, 4                     # FW_CFG_RAM_SIZE, low half
        cmpl    $0x200000, %eax
        REPORT  e, "fw_cfg ram size"
        inb     %dx, %al                    # the item goes on: bytes 4..7 are the high half
        inb     %dx, %al
        inb     %dx, %al
        inb     %dx, %al
        inb     %dx, %al                    # past the end of the 8-byte item: 0
        testb   %al, %al
        REPORT  e, "fw_cfg reads past an item are 0"
        FWCFG_READ 0x0f, 2                  # FW_CFG_MAX_CPUS (default: nb_cpus)
        cmpl    $2, %eax
        REPORT  e, "fw_cfg max cpus"
        FWCFG_READ 5, 2                     # FW_CFG_NB_CPUS
        cmpl    $2, %eax
        REPORT  e, "fw_cfg nb cpus"
        movl    %eax, %ebx

        movl    $0x12345678, %eax           # pc-testdev latch: dword, then narrower accesses
        outl    %eax, $TESTDEV
        inb     $(TESTDEV + 1), %al
        cmpb    $0x56, %al
        REPORT  e, "testdev latch byte 1"
        movw    $0xabcd, %ax
        outw    %ax, $(TESTDEV + 2)
        inl     $TESTDEV, %eax
        cmpl    $0xabcd5678, %eax
        REPORT  e, "testdev latch word 2"
        movl    $msg, %esi                  # rep outsb: the latch keeps the last byte
        movl    $3, %ecx
        movw    $TESTDEV, %dx
        cld
        rep outsb
        inb     $TESTDEV, %al
        cmpb    $'c', %al
        REPORT  e, "testdev outsb leaves the last byte"
        inl     $(TESTDEV + 8), %eax        # the byte-wide alias reads the same latch
        movl    %eax, %esi
        cmpl    $0xabcd5663, %eax
        REPORT  e, "testdev byte-wide alias"

        movl    $IORAM, %edx                # IORAM: MMIO that reads back what was written
        movl    $0xdeadbeef, (%edx)
        movw    2(%edx), %ax
        cmpw    $0xdead, %ax
        REPORT  e, "ioram word read back"
        movb    $0x5a, 0xffff(%edx)
        movb    0xffff(%edx), %al
        cmpb    $0x5a, %al
        REPORT  e, "ioram last byte"
        movl    (%edx), %edi
        cmpl    $0xdeadbeef, %edi
        REPORT  e, "ioram dword read back"

        movb    $1, %al                     # IRQ 3 up; `outl 1` to 0x200b: IRQ 11 up, 12-14 down
        movw    $(TESTDEV_IRQ + 3), %dx
        outb    %al, %dx
        movl    $1, %eax
        movw    $(TESTDEV_IRQ + 11), %dx
        outl    %eax, %dx
        inb     %dx, %al                    # the lines read as 0
        testb   %al, %al
        REPORT  e, "irq line reads 0"
        movl    $0x7fff0, %eax              # flush the stack's page (as eventinj does): the
        outl    %eax, $TESTDEV_FLUSH        # summary's calls below run on it
        REPORT_SUMMARY

        .section .rodata
msg:    .ascii  "abc"
