# cpl3_io.S — port I/O at CPL3 with IOPL 0: the TSS I/O permission bitmap decides, and a
# denied port raises #GP(0) before any VM exit (SDM 25.1.1).  With KVM's VMware backdoor
# (kvm.enable_vmware_backdoor) that #GP is intercepted and emulated with EMULTYPE_VMWARE_GP:
# the backdoor ports 0x5658/0x5659 are let through (emulator_io_port_access_allowed) and
# exit to userspace as KVM_EXIT_IO; any other port gets its #GP(0) re-injected.
# GNU as, AT&T.  Mode: long64 only.
#
# Set-up (CPL0): a GDT of our own with ring-3 segments, TSS.RSP0, an I/O bitmap after the
# TSS (only ports 0x60 and 0xf4, the debug-exit, allowed), U bit on the first 2 MiB, then
# iretq to CPL3.  At CPL3 (RESULTS, guests/lib/emu.inc):
#   +0x00  CS.RPL seen at CPL3 (the CPL)                   3
#   +0x04  inb $0x60: allowed by the bitmap → KVM_EXIT_IO  AL from the port-value device
#   +0x08  inb $0x80 → fault vector (0xff = none), +0x0c error code
#   +0x10  inl 0x5658 → fault vector, +0x14 error code, +0x18 EAX
#   +0x1c  RFLAGS.IOPL at CPL3 (0)
#   +0x20  cli → fault vector, +0x24 error code
# then EXIT 0 from CPL3 (port 0xf4 is allowed).  The CPL3 code reads CS.RPL, not CS:
# kvm_pvm shows its own user selector there.
        .include "kvmsim.inc"
        .include "emu.inc"

.if KVMSIM_MODE_LONG64 == 0
        .error  "cpl3_io.S is long64 only"
.endif


        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        # the results table starts as "no fault" everywhere
        movl    $RESULTS, %edi
        movl    $0xffffffff, %eax
        movl    $10, %ecx
        rep stosl
        # TSS: RSP0, I/O map base, the bitmap (all ports denied but 0x60 and 0xf4), the trailing 0xff
        CPL3_IOMAP_DENY_ALL
        andb    $~1, TSS + IOMAP + 0x60/8
        andb    $0x0f, TSS + IOMAP + KVMSIM_EXIT_PORT/8     # ports 0xf4-0xf7: the 4-byte OUT
        # our GDT, LTR, the first 2 MiB user-accessible, then to CPL3 with IOPL 0
        CPL3_ENTER user

user:
        movl    $RESULTS, %edi
        movw    %cs, %ax
        andl    $3, %eax
        movl    %eax, (%edi)
        movl    $0, %eax
        inb     $0x60, %al                  # bitmap bit clear: an ordinary I/O exit
        movl    %eax, 4(%edi)
        TRY     inb $0x80, %al              # bitmap bit set: #GP(0)
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, 8(%edi)
        movl    kvmsim_fault_error, %eax
        movl    %eax, 12(%edi)
        movl    $0x5658, %edx               # VMware backdoor port (beyond the bitmap: denied)
        movl    $0x11111111, %eax
        TRY     inl %dx, %eax
        movl    %eax, 0x18(%edi)
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, 0x10(%edi)
        movl    kvmsim_fault_error, %eax
        movl    %eax, 0x14(%edi)
        pushfq
        popq    %rax
        andl    $0x3000, %eax
        movl    %eax, 0x1c(%edi)
        TRY     cli                         # IOPL 0 < CPL: #GP(0), not an I/O instruction
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, 0x20(%edi)
        movl    kvmsim_fault_error, %eax
        movl    %eax, 0x24(%edi)
        EXIT    0

        .data
        CPL3_GDT
