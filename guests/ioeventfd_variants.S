# ioeventfd_variants.S — writes to three ioeventfds (scenarios/ioeventfd-variants-*.yaml), each
# followed by one that does not match it.  GNU as, AT&T.  Modes: prot32, long64.
#   MMIO_BASE+0x80, len 4, datamatch 0x1234 (KVM_MMIO_BUS only: len != 0):
#       movl $0x1234 → ioeventfd_in_range matches → kick, no exit;
#       movl $0x4321 → value differs → kvm_io_bus_write fails → KVM_EXIT_MMIO (regbank).
#   port 0x510, len 2 (KVM_PIO_BUS): outw → kvm_fast_pio → emulator_pio_out → the bus takes it →
#       kvm_skip_emulated_instruction at once (no userspace exit); outb (length 1) → KVM_EXIT_IO.
#   MMIO_BASE+0xc0, len 4, no datamatch: movw (2 bytes) → length differs → KVM_EXIT_MMIO;
#       movl → kick.
# ESI = 0x600d at the end proves each instruction retired exactly once.
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        movl    $MMIO_BASE, %ebx
        BYMODE  "movl $0x1234, 0x80(%rbx)", "movl $0x1234, 0x80(%ebx)"
        BYMODE  "movl $0x4321, 0x80(%rbx)", "movl $0x4321, 0x80(%ebx)"
        movw    $0x510, %dx
        movl    $0xbeef, %eax
pio_hit: outw    %ax, %dx
pio_miss: outb   %al, %dx
        BYMODE  "movw $0x5555, 0xc0(%rbx)", "movw $0x5555, 0xc0(%ebx)"
        BYMODE  "movl $0x7777, 0xc0(%rbx)", "movl $0x7777, 0xc0(%ebx)"
        movl    $0x600d, %esi
        EXIT    0
