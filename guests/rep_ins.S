# rep_ins.S — INS with and without REP.  GNU as, AT&T.  Modes: prot32, long64.
# A port-value device at 0x60 (size 2) reads as 0x5aa5.  handle_io sees a string
# instruction → kvm_emulate_instruction(0) → em_in → pio_in_emulated, which reads ahead
# n = min(bytes left in RDI's page, 1024/size, RCX) elements in one KVM_EXIT_IO (reference
# §3.5); complete_emulated_pio re-enters with NO_DECODE and the elements are stored in bulk.
# When the read-ahead buffer is drained but RCX is not 0, RIP stays and the guest re-executes.
#   insb          RDI=0x120000          count 1
#   rep insb x1500 RDI=0x121000 (page)   count 1024, then 476
#   rep insw x300  RDI=0x123f00          count 256 (in_page is 256 *bytes*, compared with elements:
#                                        the kernel then writes 512 bytes across the page), then 44
# Final: RDI = 0x123f00 + 600, RCX = 0.
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        cld
        movw    $0x60, %dx
        BYMODE  "movq $0x120000, %rdi",  "movl $0x120000, %edi"
        insb
        BYMODE  "movq $0x121000, %rdi",  "movl $0x121000, %edi"
        movl    $1500, %ecx
        rep insb
        BYMODE  "movq $0x123f00, %rdi",  "movl $0x123f00, %edi"
        movl    $300, %ecx
        rep insw
        EXIT    0
