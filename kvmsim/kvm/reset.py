"""Model of kvm_vcpu_reset (arch/x86/kvm/x86.c) and vmx_vcpu_reset (vmx/vmx.c): the state a new
vCPU is in before userspace touches it (SDM vol. 3 table 10-1, "IA-32 Processor States
Following Power-up, Reset, or INIT", as KVM writes it into the VMCS)."""

from __future__ import annotations

from kvmsim.hw.apicdef import APIC_BASE_RESET
from kvmsim.kvm import cr, lapic
from kvmsim.kvm.kvm_x86_ops import kvm_x86_ops
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.uapi import KvmRegs, KvmSegment, KvmSregs

X86_EFLAGS_FIXED = 0x2
RESET_RIP = 0xFFF0
RESET_CS_SELECTOR, RESET_CS_BASE = 0xF000, 0xFFFF0000
CR0_RESET = 0x60000010                 # X86_CR0_CD | X86_CR0_NW | X86_CR0_ET
DR6_ACTIVE_LOW, DR7_FIXED_1 = 0xFFFF0FF0, 0x400
RDX_NO_CPUID = 0x600                   # kvm_vcpu_reset without a CPUID leaf 1: family 6

# seg_setup(): every segment starts as a present 64 KiB segment at base 0; CS is code, TR a busy
# 32-bit TSS, LDTR an LDT (access rights 0x93, 0x9b, 0x8b, 0x82).
_SEGMENT_AR: dict[str, tuple[int, int]] = {   # name -> (type, S)
    "cs": (0xB, 1), "ds": (0x3, 1), "es": (0x3, 1), "fs": (0x3, 1), "gs": (0x3, 1), "ss": (0x3, 1),
    "tr": (0xB, 0), "ldt": (0x2, 0),
}


def reset_sregs() -> KvmSregs:
    """The segment, descriptor-table and control registers vmx_vcpu_reset/kvm_vcpu_reset set."""
    s = KvmSregs()
    for name, (type_, s_bit) in _SEGMENT_AR.items():
        setattr(s, name, KvmSegment(base=0, limit=0xFFFF, selector=0, type=type_, present=1, s=s_bit))
    s.cs.selector, s.cs.base = RESET_CS_SELECTOR, RESET_CS_BASE
    s.gdt.limit = s.idt.limit = 0xFFFF
    s.cr0 = CR0_RESET
    s.apic_base = APIC_BASE_RESET
    return s


def reset_regs(rdx: int = RDX_NO_CPUID) -> KvmRegs:
    """RIP at the reset vector's offset, RFLAGS with only the fixed bit, RDX the CPU signature."""
    return KvmRegs(rip=RESET_RIP, rflags=X86_EFLAGS_FIXED, rdx=rdx)


def kvm_vcpu_reset(vcpu: KvmVcpu, init_event: bool = False) -> None:
    """1. DR6/DR7 to their fixed values;
    2. the segments and descriptor tables (vmx_vcpu_reset), then CR8, CR0, CR4 and EFER through
       the vendor setters (read shadows included);
    3. RFLAGS, RIP and RDX = CPUID.1:EAX if a CPUID is set (none yet at vCPU creation), else 0x600."""
    vcpu.arch.dr6, vcpu.arch.dr7 = DR6_ACTIVE_LOW, DR7_FIXED_1
    lapic.kvm_lapic_reset(vcpu, init_event)

    vcpu.hw.set_sregs(reset_sregs())
    cr.kvm_set_cr8(vcpu, 0)
    kvm_x86_ops.set_cr0(vcpu, CR0_RESET)        # read shadow and the CPU's CR0
    kvm_x86_ops.set_cr4(vcpu, 0)
    kvm_x86_ops.set_efer(vcpu, 0)
    leaf1 = next((e for e in vcpu.arch.cpuid_entries if e.function == 1), None)
    vcpu.hw.set_regs(reset_regs(leaf1.eax if leaf1 is not None else RDX_NO_CPUID))
