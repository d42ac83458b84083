# emu_io.S — IN/OUT (imm8 and DX ports, 8/16/32 bits) and string I/O with REP to a userspace port
# device (port-value 0x60, 4 bytes wide: reads 0x8badf00d; OUT is accepted and ignored), with RAM
# buffers and with the string operand in MMIO (OUTSB reading the register bank, INSB writing it).
# The exit stream (port, size, count, data) is what `kvmsim diff` compares, with the RESULTS table.
# GNU as, AT&T.  Modes: prot32, long64.
        .include "kvmsim.inc"
        .include "emu.inc"

BUF = RESULTS + 0x800                 # RAM buffer for the string instructions

        GUEST_ENTRY
        EMU_BEGIN
        cld
        # IN merges AL/AX into EAX (upper bits kept), IN EAX replaces it
        movl    $0x11223344, %eax
        inb     $0x60, %al
        SAVE    %eax
        movw    $0x60, %dx
        movl    $0x11223344, %eax
        inw     %dx, %ax
        SAVE    %eax
        movl    $0x11223344, %eax
        inl     %dx, %eax
        SAVE    %eax
        inb     $0x62, %al                  # an offset inside the device
        SAVE    %eax
        # OUT of each width (the data is in the exit)
        movl    $0xa1b2c3d4, %eax
        outb    %al, $0x60
        outw    %ax, %dx
        outl    %eax, %dx
        # REP INSW into RAM (one exit with count 5), then REP OUTSL from RAM (one exit per element)
        BYMODE  "movq $BUF, %rdi", "movl $BUF, %edi"
        movl    $5, %ecx
        rep insw
        movl    $RESULTS + 0x10, %edi       # (EDI was the INS pointer)
        SAVE    %ecx
        movl    BUF, %eax
        SAVE    %eax
        movl    BUF + 8, %eax
        SAVE    %eax
        movl    $0x01020304, BUF + 0x20
        movl    $0x05060708, BUF + 0x24
        movl    $0x090a0b0c, BUF + 0x28
        BYMODE  "movq $BUF + 0x20, %rsi", "movl $BUF + 0x20, %esi"
        movl    $3, %ecx
        rep outsl
        BYMODE  "movq %rsi, %rax", "movl %esi, %eax"
        subl    $BUF, %eax
        SAVE    %eax
        # OUTSB with the source in MMIO: each element an MMIO read, then the port write
        MMIO32  0x00, 0x44332211
        BYMODE  "movq $MMIO_BASE, %rsi", "movl $MMIO_BASE, %esi"
        movl    $3, %ecx
        rep outsb
        SAVE    %esi, %ecx
        # INSB with the destination in MMIO: the port read, then an MMIO write per element
        MMIO32  0x10, 0
        BYMODE  "movq $MMIO_BASE + 0x10, %rdi", "movl $MMIO_BASE + 0x10, %edi"
        movl    $2, %ecx
        rep insb
        movl    %edi, %eax
        movl    $RESULTS + 0x40, %edi
        SAVE    %eax
        SAVE_BANK 0x10
        # STD: INSB backwards into RAM
        std
        BYMODE  "movq $BUF + 0x43, %rdi", "movl $BUF + 0x43, %edi"
        movl    $4, %ecx
        rep insb
        cld
        movl    %edi, %eax
        movl    $RESULTS + 0x48, %edi
        subl    $BUF, %eax
        SAVE    %eax
        movl    BUF + 0x40, %eax
        SAVE    %eax
        EXIT    0
