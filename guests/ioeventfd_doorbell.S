# ioeventfd_doorbell.S — writes to a doorbell with a length-0 MMIO ioeventfd at
# MMIO_BASE+0x40, then one write to the regbank on the same page.  GNU as, AT&T.
# Modes: prot32, long64.
#   1st doorbell write: EPT violation (no MMIO SPTE yet) → kvm_mmu_page_fault → emulate
#       (EMULTYPE_PF) → write_emulated → KVM_MMIO_BUS → the ioeventfd takes it: no exit.
#   2nd, 3rd: EPT misconfig → handle_ept_misconfig → KVM_FAST_MMIO_BUS length 0 matches →
#       kvm_skip_emulated_instruction: no decode, no emulation (reference §4.2 step 3) —
#       unless KVM runs nested under a hypervisor: then skip_emulated_instruction cannot
#       trust VM_EXIT_INSTRUCTION_LEN and decodes with EMULTYPE_SKIP (§5 step 2).
#   regbank write: EPT misconfig, no fast-MMIO match → EMULTYPE_PF → KVM_EXIT_MMIO.
        .include "kvmsim.inc"
        .include "mmio.inc"

        GUEST_ENTRY
        movl    $MMIO_BASE, %ebx
        BYMODE  "movl $1, 0x40(%rbx)",    "movl $1, 0x40(%ebx)"
        BYMODE  "movw $2, 0x40(%rbx)",    "movw $2, 0x40(%ebx)"
        BYMODE  "movb $3, 0x40(%rbx)",    "movb $3, 0x40(%ebx)"
        BYMODE  "movl $0xabcd, (%rbx)",   "movl $0xabcd, (%ebx)"
        movl    $0x600d, %esi               # proves each doorbell instruction was skipped once
        EXIT    0
