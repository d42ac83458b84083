# census.S — a small machine's mixed day, for `kvmsim census` (scenarios/census*.yaml).  GNU as, AT&T.
# Mode: long64.  Each of CENSUS_ITERS rounds does what a guest kernel with a virtio device does:
#   serial line "tick\n"      5 OUTs to the 16550: IO_INSTRUCTION exits, fast PIO, no emulation
#   virtio-style doorbell     a write to the length-0 ioeventfd at MMIO_BASE+0x40: the first is an
#                             EPT violation (EMULTYPE_PF), the rest EPT misconfig fast MMIO — no
#                             emulation, unless KVM runs nested: then EMULTYPE_SKIP, once each
#   MMIO register read        EMULTYPE_PF, KVM_EXIT_MMIO, then NO_DECODE from complete_emulated_mmio
#   MMIO register write       EMULTYPE_PF, KVM_EXIT_MMIO (a write needs no completion)
#   string I/O                rep outsb (8 bytes) to the serial port and rep insb (4) from port 0x60:
#                             handle_io → emulation type 0; the IN completes with NO_DECODE
#   hypercall via VMMCALL     the AMD instruction on an Intel host: #UD → handle_ud → EMULTYPE_TRAP_UD
#                             rewrites it to VMCALL once; after that it is a VMCALL exit
#   compute                   CENSUS_SPIN iterations of a 2-instruction loop: host NMIs (the perf
#                             watchdog, scenario events) land here as EXCEPTION_NMI exits
        .include "kvmsim.inc"
        .include "mmio.inc"

.ifndef CENSUS_ITERS
CENSUS_ITERS = 8
.endif
.ifndef CENSUS_SPIN
CENSUS_SPIN = 20000
.endif
KVM_HC_SCHED_YIELD = 11

        GUEST_ENTRY
        cld
        movl    $MMIO_BASE, %ebx
        movl    $CENSUS_ITERS, %r12d
round:
        SERIAL_PRINT "tick\n"
        movl    $1, 0x40(%rbx)              # doorbell (ioeventfd, len 0)
        movl    (%rbx), %eax                # MMIO register read: the regbank's 0x1234
        cmpl    $0x1234, %eax
        FAIL_IF_NE 1
        movl    %r12d, 4(%rbx)              # MMIO register write
        leaq    msg(%rip), %rsi             # string OUT
        movl    $8, %ecx
        movw    $0x3f8, %dx
        rep outsb
        leaq    inbuf(%rip), %rdi           # string IN
        movl    $4, %ecx
        movw    $0x60, %dx
        rep insb
        cmpb    $0xa5, inbuf(%rip)
        FAIL_IF_NE 2
        call    hypercall
        testq   %rax, %rax                  # KVM_HC_SCHED_YIELD returns 0
        FAIL_IF_NE 3
        movl    $CENSUS_SPIN, %ecx
1:      decl    %ecx
        jnz     1b
        decl    %r12d
        jnz     round
        EXIT    0

hypercall:
        movl    $KVM_HC_SCHED_YIELD, %eax
        xorl    %ebx, %ebx                  # a0: the target vCPU's APIC id
hc:     vmmcall                             # patched to vmcall by the first #UD
        movl    $MMIO_BASE, %ebx
        ret

        .section .rodata
msg:    .ascii  "census!\n"
        .section .data
inbuf:  .long   0
