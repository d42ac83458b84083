# rep_outs.S — OUTS with REP.  GNU as, AT&T.  Modes: prot32, long64.
# handle_io → kvm_emulate_instruction(0) → em_out → pio_out_emulated with count 1: every
# element is its own KVM_EXIT_IO.  An emulated OUT retires before the exit (no cui); for an
# unfinished REP the restart returns with RIP unchanged, so the guest re-executes it
# (reference §3.5, §12 item 2).
#   rep outsb x6 to the 16550 THR (0x3f8): serial "kvmsim"
#   rep outsl x2 to port 0x64 (a port-value device that ignores writes)
# Final: RSI = msg + 6 + 8, RCX = 0.
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        cld
        BYMODE  "movq $msg, %rsi",  "movl $msg, %esi"
        movw    $0x3f8, %dx
        movl    $6, %ecx
        rep outsb
        movw    $0x64, %dx
        movl    $2, %ecx
        rep outsl
        EXIT    0

        .data
msg:    .ascii  "kvmsim"
        .long   0x11223344, 0x55667788
