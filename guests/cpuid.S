# cpuid.S — CPUID leaves 0, 1 and CPUID_LEAF; results left in registers for the scenario.
# GNU as, AT&T syntax.  Mode: long64 (needs r8-r15).
#
# CPUID exits unconditionally on VMX (exit reason 10, kvm_emulate_cpuid); 3 CPUID exits.
# CPUID_LEAF (--defsym / YAML guest.defsym) defaults to 0x40000000, KVM's signature leaf:
# eax = 0x40000001 (max KVM leaf), ebx:ecx:edx = "KVMK" "VMKV" "M\0\0\0"
# = 0x4b4d564b, 0x564b4d56, 0x0000004d.
#
# Registers at EXIT (rax = 0 is the exit code):
#   leaf 0:           r8 = eax (max basic leaf), r9 = ebx, r10 = ecx, r11 = edx (vendor string,
#                     ebx-edx-ecx order: "Genu" "ineI" "ntel" = r9, r11, r10)
#   leaf 1:           rsi = eax (signature), rbx = ebx, rdi = ecx (bit 31: hypervisor), rbp = edx
#   leaf CPUID_LEAF:  r12 = eax, r13 = ebx, r14 = ecx, r15 = edx
#   rcx = CPUID_LEAF, rdx = 0
# The same 12 dwords are at symbol cpuid_results (leaf 0, leaf 1, leaf N; eax ebx ecx edx each).
# Serial: "vendor <12 chars>\n" and "leaf <N hex> <ebx ecx edx as text, up to the first NUL>\n".

        .include "kvmsim.inc"

.if KVMSIM_MODE_LONG64 == 0
        .error  "cpuid.S is a long64 guest (results go to r8-r15)"
.endif

.ifndef CPUID_LEAF
CPUID_LEAF = 0x40000000
.endif

# CPUID leaf (subleaf 0), then store eax ebx ecx edx at slot.
.macro CPUID_STORE leaf, slot
        movl    $\leaf, %eax
        xorl    %ecx, %ecx
        cpuid
        movl    %eax, \slot
        movl    %ebx, \slot + 4
        movl    %ecx, \slot + 8
        movl    %edx, \slot + 12
.endm

        GUEST_ENTRY
        CPUID_STORE 0, leaf0
        CPUID_STORE 1, leaf1
        CPUID_STORE CPUID_LEAF, leafn

        # Vendor string: ebx, edx, ecx.
        movl    leaf0 + 4, %eax
        movl    %eax, text
        movl    leaf0 + 12, %eax
        movl    %eax, text + 4
        movl    leaf0 + 8, %eax
        movl    %eax, text + 8
        SERIAL_PRINT "vendor "
        SERIAL_PUTS text
        SERIAL_PUTC 0x0a

        # Leaf N signature: ebx, ecx, edx.
        movl    leafn + 4, %eax
        movl    %eax, text
        movl    leafn + 8, %eax
        movl    %eax, text + 4
        movl    leafn + 12, %eax
        movl    %eax, text + 8
        SERIAL_PRINT "leaf "
        movl    $CPUID_LEAF, %eax
        call    serial_puthex
        SERIAL_PUTC 0x20
        SERIAL_PUTS text
        SERIAL_PUTC 0x0a

        # Registers for the scenario's expect.regs (32-bit loads zero-extend).
        movl    leaf0, %r8d
        movl    leaf0 + 4, %r9d
        movl    leaf0 + 8, %r10d
        movl    leaf0 + 12, %r11d
        movl    leaf1, %esi
        movl    leaf1 + 4, %ebx
        movl    leaf1 + 8, %edi
        movl    leaf1 + 12, %ebp
        movl    leafn, %r12d
        movl    leafn + 4, %r13d
        movl    leafn + 8, %r14d
        movl    leafn + 12, %r15d
        movl    $CPUID_LEAF, %ecx
        xorl    %edx, %edx
        EXIT    0

        .data
        .balign 4
cpuid_results:
leaf0:  .long   0, 0, 0, 0
leaf1:  .long   0, 0, 0, 0
leafn:  .long   0, 0, 0, 0
text:   .space  13                      # 12 signature bytes + NUL
