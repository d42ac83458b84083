# rdpmc_pause.S — RDPMC without a vPMU, and a PAUSE spin loop.  GNU as, AT&T.  Mode: long64.
#
# RDPMC (RDPMC exiting is always on): kvm_emulate_rdpmc finds no vPMU (kvm.enable_pmu=N, no
# CPUID leaf 0xA counters) and injects #GP(0), for a general counter (ECX 0) and a fixed one
# (ECX 1<<30).  Then a spin loop of SPINS PAUSEs at one address (CPL0): with PAUSE-loop exiting
# the loop exits once it has spun longer than PLE_Window, and handle_pause grows the window.
# Results (RESULTS = 0x90000, 4 bytes each):
#   +0x00 RDPMC ECX=0 vector 13, +0x04 error 0, +0x08 EAX kept 0x5a5a5a5a
#   +0x0c RDPMC ECX=0x40000000 vector 13, +0x10 error 0
#   +0x14 PAUSEs spun (SPINS)
        .include "kvmsim.inc"

RESULTS = 0x90000
.ifndef SPINS
SPINS = 200
.endif

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        movl    $0x5a5a5a5a, %eax
        xorl    %ecx, %ecx
        TRY     rdpmc
        movl    %eax, RESULTS+0x08
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, RESULTS+0x00
        movl    kvmsim_fault_error, %eax
        movl    %eax, RESULTS+0x04
        movl    $(1 << 30), %ecx
        TRY     rdpmc
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, RESULTS+0x0c
        movl    kvmsim_fault_error, %eax
        movl    %eax, RESULTS+0x10
        xorl    %ebx, %ebx
        movl    $SPINS, %ecx
1:      pause
        incl    %ebx
        decl    %ecx
        jnz     1b
        movl    %ebx, RESULTS+0x14
        xorl    %eax, %eax
        xorl    %edx, %edx
        EXIT    0
