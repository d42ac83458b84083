# invalid_state_prot.S — 32-bit protected mode that starts with state VM entry refuses without
# unrestricted guest: the scenario loads DS with selector 0x13 (RPL 3) over the boot's flat DPL-0
# data cache (DPL < RPL).  The guest reloads DS with 0x10 (valid again), counts ESI up in a loop
# and EXITs 0.  GNU as, AT&T.  Mode: prot32.
        .include "kvmsim.inc"

        GUEST_ENTRY
        movw    %ds, %bx                        # the selector the guest started with (0x13)
        movw    $0x10, %ax
        movw    %ax, %ds
        movl    $4, %ecx
1:      addl    $2, %esi
        loop    1b
        EXIT    0
