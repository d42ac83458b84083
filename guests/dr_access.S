# dr_access.S — MOV DR under KVM's lazy debug-register switch, and DR7.GD.  GNU as, AT&T.
# Mode: long64.
#
# KVM sets MOV-DR exiting; at the first DR access handle_dr drops it (userspace is not
# debugging) and the guest's MOV DRs run natively until the next VM exit, where KVM reads the
# registers back and intercepts MOV DR again.  Steps (CPUID is only there to make a VM exit):
#   1. MOV from DR0: exits once; then DR1 = 0x1234 and back, DR6 read: native, no exit
#   2. DR7 = GD (native); MOV from DR0 → the CPU's #DB (DR6.BD, GD cleared on delivery)
#   3. CPUID (an exit: MOV DR intercepted again); DR7 = GD: exits, then native again
#   4. CPUID; MOV from DR1 exits, handle_dr sees GUEST_DR7.GD: KVM injects #DB (payload DR6.BD)
#   5. the #DB handler done, DR6 and DR7 read back (one exit, then native)
# Results (RESULTS = 0x90000, 4 bytes each):
#   +0x00 DR1 read back 0x1234   +0x04 DR6 (low 32) 0xffff0ff0
#   +0x08 step 2 fault vector 1  +0x0c DR6 after it: BD set       +0x10 DR7 after it: GD clear (0x400)
#   +0x14 step 4 fault vector 1  +0x18 DR6 after it: BD set       +0x1c DR7 after it: 0x400
        .include "kvmsim.inc"

RESULTS = 0x90000
DR7_GD = 1 << 13

.macro CLEAR_VENDOR                          # the vendor string is the host's on /dev/kvm
        xorl    %ebx, %ebx
        xorl    %ecx, %ecx
        xorl    %edx, %edx
.endm

.macro PUT off, src
        movl    \src, RESULTS+\off
.endm

        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        movq    %dr0, %rax                   # 1: the one DR_ACCESS exit of this phase
        movl    $0x1234, %ebx
        movq    %rbx, %dr1
        movq    %dr1, %rcx
        PUT     0x00, %ecx
        movq    %dr6, %rax
        PUT     0x04, %eax
        movl    $(DR7_GD | 0x400), %eax      # 2: GD set natively
        movq    %rax, %dr7
        TRY     movq %dr0, %rax              # the CPU's #DB: general detect
        movzbl  kvmsim_fault_vector, %eax
        PUT     0x08, %eax
        movq    %dr6, %rax
        PUT     0x0c, %eax
        movq    %dr7, %rax
        PUT     0x10, %eax
        movq    $0, %rax                     # DR6 back to its reset value
        movq    %rax, %dr6
        xorl    %eax, %eax                   # 3: an exit; MOV DR exits again
        cpuid
        CLEAR_VENDOR
        movl    $(DR7_GD | 0x400), %eax
        movq    %rax, %dr7                   # exits, then runs natively
        xorl    %eax, %eax                   # 4: an exit; KVM reads GUEST_DR7 with GD
        cpuid
        CLEAR_VENDOR
        TRY     movq %dr1, %rax              # exits: handle_dr injects #DB (DR6.BD)
        movzbl  kvmsim_fault_vector, %eax
        PUT     0x14, %eax
        movq    %dr6, %rax                   # 5: exits once, then native
        PUT     0x18, %eax
        movq    %dr7, %rax
        PUT     0x1c, %eax
        EXIT    0
