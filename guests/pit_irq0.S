# pit_irq0.S — the in-kernel PIT's IRQ0 through the in-kernel PIC to a real-mode IVT handler (real16).
# GNU as, AT&T syntax.
#
# KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2: ports 0x20/0x21, 0xa0/0xa1 and 0x40-0x43 are handled in the
# kernel (IO_INSTRUCTION exits that never reach userspace).  The guest does what a BIOS does:
# 1. PICs: ICW1-4 with vector bases 0x08/0x70, the slave on IRQ2; OCW1 leaves only IRQ0 open; the
#    mask reads back.  IVT entry 8 -> tick (counts, non-specific EOI, IRET).
# 2. PIT channel 0: control word 0x34 (LSB then MSB, mode 2, binary), count 11932 (100 Hz); a
#    counter latch reads a count below it: the PIT counts down.
# 3. STI; HLT three times: each HLT sleeps in the kernel until the tick wakes it (on the sim the
#    virtual clock jumps to the PIT's deadline) and vector 0x08 reaches the handler.
# 4. Spin with IF=1 until a fourth tick: it arrives while the guest runs (on the sim, the PIT's
#    hrtimer interrupts the guest as the host's timer: an EXTERNAL_INTERRUPT exit).
# 5. With IF=0 the next tick waits in the IRR (OCW3 read IRR); after STI the interrupt window opens
#    at the end of its shadow (on the sim an INTERRUPT_WINDOW exit) and the tick is delivered then.
# 6. After the EOIs nothing is in service (OCW3 read ISR); the read-back command's status byte of
#    channel 0 says LSB/MSB access, mode 2, binary.
# Expect: "SUMMARY: 8 tests, 0 failures".

        .include "kvmsim.inc"

        GUEST_ENTRY
        cli
        SET_IVT_HANDLER 0x08, tick
        mov     $0x11, %al                  # ICW1: edge, cascade, ICW4 follows
        out     %al, $0x20
        out     %al, $0xa0
        mov     $0x08, %al                  # ICW2: vector bases
        out     %al, $0x21
        mov     $0x70, %al
        out     %al, $0xa1
        mov     $0x04, %al                  # ICW3: slave on IRQ2 / slave id 2
        out     %al, $0x21
        mov     $0x02, %al
        out     %al, $0xa1
        mov     $0x01, %al                  # ICW4: 8086 mode
        out     %al, $0x21
        out     %al, $0xa1
        mov     $0xfe, %al                  # OCW1: only IRQ0
        out     %al, $0x21
        mov     $0xff, %al
        out     %al, $0xa1
        in      $0x21, %al
        cmp     $0xfe, %al
        REPORT  e, "PIC master mask reads back (in-kernel port 0x21)"

        mov     $0x34, %al                  # counter 0, LSB then MSB, mode 2, binary
        out     %al, $0x43
        mov     $(11932 & 0xff), %al
        out     %al, $0x40
        mov     $(11932 >> 8), %al
        out     %al, $0x40
        mov     $0x00, %al                  # counter latch, channel 0
        out     %al, $0x43
        in      $0x40, %al
        mov     %al, %bl
        in      $0x40, %al
        mov     %al, %bh
        cmp     $11932, %bx
        REPORT  b, "PIT channel 0 counts down (latched count below the initial count)"
        xor     %ebx, %ebx                  # the count depends on time (host or virtual): not kept

        movl    $3, %ecx
1:      sti
        hlt
        cli
        loop    1b
        cmpl    $3, ticks
        REPORT  e, "three IRQ0 ticks woke three HLTs (vector 0x08 through the IVT)"

        sti
2:      cmpl    $4, ticks
        jb      2b
        cli
        cmpl    $4, ticks
        REPORT  e, "a fourth tick arrived while the guest spun with IF=1"

        mov     $0x0a, %al                  # OCW3: port 0x20 reads the IRR
        out     %al, $0x20
3:      in      $0x20, %al                  # IF=0: wait for the next tick to latch in the IRR
        test    $1, %al
        jz      3b
        cmpl    $4, ticks
        REPORT  e, "a tick while IF=0 waits in the IRR"
        sti                                 # VMX: the window opens after STI's shadow (the first CMP)
4:      cmpl    $5, ticks                   # (kvm_pvm delivers it later: wait for it)
        jne     4b
        cli
        REPORT  e, "it is delivered once IF=1 (interrupt window)"

        mov     $0x0b, %al                  # OCW3: read ISR
        out     %al, $0x20
        in      $0x20, %al
        cmp     $0, %al
        REPORT  e, "nothing in service after the handler's EOIs"

        mov     $0xe2, %al                  # read-back: status only, channel 0
        out     %al, $0x43
        in      $0x40, %al
        and     $0x3f, %al
        cmp     $0x34, %al
        REPORT  e, "read-back status: LSB/MSB access, mode 2, binary"
        REPORT_SUMMARY

tick:   incl    %cs:ticks
        push    %ax
        mov     $0x20, %al                  # non-specific EOI
        out     %al, $0x20
        pop     %ax
        iret

ticks:  .long 0
