# bios_irq.S: the handlers a PC BIOS leaves in the real-mode IVT for the hardware IRQs (SeaBIOS's
# entry_08 and its default hwirq handlers, reduced to what a guest observes): a non-specific EOI
# to the PIC the IRQ came through (the slave's IRQs end at the master's cascade line too), IRET.
# Simplified: no BIOS tick count (BDA 0x46c) and no INT 1Ch chained from the timer IRQ.
# Assembled as real16 code at the `handlers` GPA of the scenario's bios-irq device
# (scenario/runner.py _write_bios_irq); registers are left as they were.

        .globl irq_master, irq_slave
irq_master:                             # vectors 0x08-0x0f: IRQ 0-7
        push    %ax
        mov     $0x20, %al              # OCW2: non-specific EOI
        out     %al, $0x20
        pop     %ax
        iret

irq_slave:                              # vectors 0x70-0x77: IRQ 8-15
        push    %ax
        mov     $0x20, %al
        out     %al, $0xa0
        out     %al, $0x20
        pop     %ax
        iret
