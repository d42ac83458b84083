"""Model of arch/x86/kvm/x86.c control and debug registers: kvm_set_cr0/3/4/8, kvm_get_cr8,
kvm_lmsw, kvm_get_dr/kvm_set_dr and the reserved-bit checks behind them.

The guest's CR0/CR4 are what KVM reads: guest-owned bits from the CPU, the others from the
read shadows KVM keeps in the VMCS (kvm_read_cr0/kvm_read_cr4 with the register cache).
"""

from __future__ import annotations

from kvmsim.hw.vmcs import Vector
from kvmsim.kvm import cpuid, lapic, mmu_shadow
from kvmsim.kvm.kvm_x86_ops import kvm_x86_ops
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_exception import kvm_queue_exception
from kvmsim.uapi import KVM_GUESTDBG_USE_HW_BP

X86_CR0_PE, X86_CR0_MP, X86_CR0_EM, X86_CR0_TS = 1 << 0, 1 << 1, 1 << 2, 1 << 3
X86_CR0_ET, X86_CR0_NE, X86_CR0_WP, X86_CR0_AM = 1 << 4, 1 << 5, 1 << 16, 1 << 18
X86_CR0_NW, X86_CR0_CD, X86_CR0_PG = 1 << 29, 1 << 30, 1 << 31
CR0_RESERVED_BITS = ~(X86_CR0_PE | X86_CR0_MP | X86_CR0_EM | X86_CR0_TS | X86_CR0_ET | X86_CR0_NE
                      | X86_CR0_WP | X86_CR0_AM | X86_CR0_NW | X86_CR0_CD | X86_CR0_PG) & ((1 << 64) - 1)
X86_CR0_PDPTR_BITS = X86_CR0_CD | X86_CR0_NW | X86_CR0_PG

X86_CR4_VME, X86_CR4_PVI, X86_CR4_TSD, X86_CR4_DE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
X86_CR4_PSE, X86_CR4_PAE, X86_CR4_MCE, X86_CR4_PGE = 1 << 4, 1 << 5, 1 << 6, 1 << 7
X86_CR4_PCE, X86_CR4_OSFXSR, X86_CR4_OSXMMEXCPT, X86_CR4_UMIP = 1 << 8, 1 << 9, 1 << 10, 1 << 11
X86_CR4_LA57, X86_CR4_VMXE, X86_CR4_SMXE, X86_CR4_FSGSBASE = 1 << 12, 1 << 13, 1 << 14, 1 << 16
X86_CR4_PCIDE, X86_CR4_OSXSAVE, X86_CR4_SMEP, X86_CR4_SMAP = 1 << 17, 1 << 18, 1 << 20, 1 << 21
X86_CR4_PKE, X86_CR4_CET, X86_CR4_LAM_SUP = 1 << 22, 1 << 23, 1 << 28
X86_CR4_PDPTR_BITS = X86_CR4_PGE | X86_CR4_PSE | X86_CR4_PAE | X86_CR4_SMEP
# Bits KVM lets a guest set at all (SMXE is not among them: KVM does not virtualise SMX).
CR4_RESERVED_BITS = ~(X86_CR4_VME | X86_CR4_PVI | X86_CR4_TSD | X86_CR4_DE | X86_CR4_PSE | X86_CR4_PAE
                      | X86_CR4_MCE | X86_CR4_PGE | X86_CR4_PCE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT
                      | X86_CR4_UMIP | X86_CR4_LA57 | X86_CR4_VMXE | X86_CR4_FSGSBASE
                      | X86_CR4_PCIDE | X86_CR4_OSXSAVE | X86_CR4_SMEP | X86_CR4_SMAP | X86_CR4_PKE
                      | X86_CR4_CET | X86_CR4_LAM_SUP) & ((1 << 64) - 1)
X86_CR3_PCID_MASK = 0xFFF
CR8_RESERVED_BITS = ~0xF & ((1 << 64) - 1)
EFER_LME, EFER_LMA = 1 << 8, 1 << 10

# __cr4_reserved_bits: a CR4 bit is reserved when the guest's CPUID lacks its feature.
# CR4 bit -> (leaf, subleaf, register, bit) of the feature.
CR4_FEATURES: dict[int, tuple[int, int, str, int]] = {
    X86_CR4_OSXSAVE: (1, 0, "ecx", 26),      # XSAVE
    X86_CR4_SMEP: (7, 0, "ebx", 7),
    X86_CR4_SMAP: (7, 0, "ebx", 20),
    X86_CR4_FSGSBASE: (7, 0, "ebx", 0),
    X86_CR4_PKE: (7, 0, "ecx", 3),           # PKU
    X86_CR4_LA57: (7, 0, "ecx", 16),
    X86_CR4_UMIP: (7, 0, "ecx", 2),
    X86_CR4_VMXE: (1, 0, "ecx", 5),          # VMX (not advertised: nested is off)
    X86_CR4_PCIDE: (1, 0, "ecx", 17),
    X86_CR4_LAM_SUP: (7, 1, "eax", 26),
    X86_CR4_CET: (7, 0, "ecx", 7),           # CET_SS (simplified: IBT alone does not count)
}

# Debug registers (arch/x86/include/asm/debugreg.h, kvm_host.h).
DR6_BD, DR6_BS, DR6_BT = 1 << 13, 1 << 14, 1 << 15
DR6_RTM, DR6_BUS_LOCK = 1 << 16, 1 << 11
DR6_ACTIVE_LOW = 0xFFFF0FF0
DR6_VOLATILE = 0x0001E80F
DR6_FIXED_1 = 0xFFFE0FF0
DR7_GD = 1 << 13
DR7_FIXED_1 = 0x00000400
DR7_VOLATILE = 0xFFFF2BFF


def guest_cpuid_has(vcpu: KvmVcpu, leaf: int, sub: int, reg: str, bit: int) -> bool:
    e = cpuid.kvm_find_cpuid_entry_index(vcpu, leaf, sub)
    return e is not None and bool(getattr(e, reg) >> bit & 1)


def cpuid_maxphyaddr(vcpu: KvmVcpu) -> int:
    e = cpuid.kvm_find_cpuid_entry_index(vcpu, 0x80000008, 0)
    return (e.eax & 0xFF) if e is not None and e.eax & 0xFF else 36


def cr4_guest_rsvd_bits(vcpu: KvmVcpu) -> int:
    """__cr4_reserved_bits(guest_cpuid_has, vcpu), set by kvm_vcpu_after_set_cpuid."""
    bits = CR4_RESERVED_BITS
    for cr4_bit, feature in CR4_FEATURES.items():
        if not guest_cpuid_has(vcpu, *feature):
            bits |= cr4_bit
    return bits


# ---------------------------------------------------------------- reading CR0/CR4 as KVM does

def kvm_read_cr0(vcpu: KvmVcpu) -> int:
    """Guest-owned bits (CR0.TS/WP) as the CPU holds them, the rest from the read shadow."""
    owned = vcpu.arch.cr0_guest_owned_bits
    return (vcpu.hw.cr(0) & owned) | (vcpu.hw.vmcs.cr0_read_shadow & ~owned)


def kvm_read_cr4(vcpu: KvmVcpu) -> int:
    owned = vcpu.arch.cr4_guest_owned_bits
    return (vcpu.hw.cr(4) & owned) | (vcpu.hw.vmcs.cr4_read_shadow & ~owned)


def kvm_read_cr3(vcpu: KvmVcpu) -> int:
    return vcpu.hw.cr(3)


def is_paging(vcpu: KvmVcpu) -> bool:
    return bool(kvm_read_cr0(vcpu) & X86_CR0_PG)


def is_pae(vcpu: KvmVcpu) -> bool:
    return bool(kvm_read_cr4(vcpu) & X86_CR4_PAE)


def is_long_mode(vcpu: KvmVcpu) -> bool:
    return bool(vcpu.hw.efer() & EFER_LMA)


def load_pdptrs(vcpu: KvmVcpu, cr3: int) -> bool:
    """PAE paging: the four PDPTEs at CR3 must not set reserved bits (bits 2:1, 8:5, above
    MAXPHYADDR) when present; unreadable memory fails too.  With EPT the CPU loads them itself
    at entry, so only the check is modelled."""
    base = cr3 & 0xFFFF_FFE0
    rsvd = (((1 << 64) - 1) ^ ((1 << cpuid_maxphyaddr(vcpu)) - 1)) | 0x1E6
    hw = vcpu.hw
    if not hw.gpa_is_ram(base) or not hw.gpa_is_ram(base + 31):
        return False
    for i in range(4):
        pdpte = hw.read_phys(base + 8 * i, 8)
        if pdpte & 1 and pdpte & rsvd:
            return False
    return True


# ---------------------------------------------------------------- CR0

def kvm_is_valid_cr0(vcpu: KvmVcpu, cr0: int) -> bool:
    if cr0 >> 32:
        return False
    if cr0 & X86_CR0_NW and not cr0 & X86_CR0_CD:
        return False
    if cr0 & X86_CR0_PG and not cr0 & X86_CR0_PE:
        return False
    return True   # vmx_is_valid_cr0: only nested VMXON adds checks


def kvm_set_cr0(vcpu: KvmVcpu, cr0: int) -> int:
    """1 (#GP) when the value is invalid or the paging transition is not allowed, else 0."""
    old_cr0 = kvm_read_cr0(vcpu)
    if not kvm_is_valid_cr0(vcpu, cr0):
        return 1
    cr0 |= X86_CR0_ET
    cr0 &= ~CR0_RESERVED_BITS          # reserved CR0 bits are dropped, not faulted
    efer = vcpu.hw.efer()
    if efer & EFER_LME and not old_cr0 & X86_CR0_PG and cr0 & X86_CR0_PG:
        if not is_pae(vcpu):
            return 1
        if vcpu.hw.segment("cs").l:
            return 1
    if (not efer & EFER_LME and cr0 & X86_CR0_PG and is_pae(vcpu)
            and (cr0 ^ old_cr0) & X86_CR0_PDPTR_BITS and not load_pdptrs(vcpu, kvm_read_cr3(vcpu))):
        return 1
    if not cr0 & X86_CR0_PG and (vcpu.hw.mode() == "long64" or kvm_read_cr4(vcpu) & X86_CR4_PCIDE):
        return 1
    kvm_x86_ops.set_cr0(vcpu, cr0)
    # kvm_post_set_cr0: MMU context reset / TLB flush: the silicon flushes on its own CR0 write.
    return 0


def kvm_lmsw(vcpu: KvmVcpu, msw: int) -> None:
    """LMSW: bits 3:0 of the source into CR0, never clearing PE; errors are ignored."""
    kvm_set_cr0(vcpu, (kvm_read_cr0(vcpu) & ~0x0E) | (msw & 0x0F))


# ---------------------------------------------------------------- CR3, CR4, CR8

def kvm_set_cr3(vcpu: KvmVcpu, cr3: int) -> int:
    """Reached only with CR3 exiting (no EPT, or EPT without unrestricted guest while CR0.PG=0)."""
    if is_long_mode(vcpu):
        cr3 &= ~(1 << 63)                       # X86_CR3_PCID_NOFLUSH with CR4.PCIDE
        if cr3 >> cpuid_maxphyaddr(vcpu):       # kvm_vcpu_is_illegal_cr3
            return 1
    elif is_pae(vcpu) and is_paging(vcpu) and not load_pdptrs(vcpu, cr3):
        return 1
    same = cr3 == kvm_read_cr3(vcpu)
    vcpu.hw.set_cr(3, cr3)
    if not vcpu.kvm.params.enable_ept and is_paging(vcpu):
        if not same:
            mmu_shadow.kvm_mmu_new_pgd(vcpu, cr3)   # fast_pgd_switch, then the new root's shadow pages
        else:
            vcpu.hw.flush_tlb()     # the same CR3: no new root, only the guest's TLB flush (kvm_invalidate_pcid)
    return 0


def kvm_is_valid_cr4(vcpu: KvmVcpu, cr4: int) -> bool:
    return not cr4 & vcpu.arch.cr4_guest_rsvd_bits and not cr4 & CR4_RESERVED_BITS


def kvm_set_cr4(vcpu: KvmVcpu, cr4: int) -> int:
    old_cr4 = kvm_read_cr4(vcpu)
    if not kvm_is_valid_cr4(vcpu, cr4):
        return 1
    if is_long_mode(vcpu):
        if not cr4 & X86_CR4_PAE:
            return 1
        if (cr4 ^ old_cr4) & X86_CR4_LA57:
            return 1
    elif (is_paging(vcpu) and cr4 & X86_CR4_PAE and (cr4 ^ old_cr4) & X86_CR4_PDPTR_BITS
          and not load_pdptrs(vcpu, kvm_read_cr3(vcpu))):
        return 1
    if cr4 & X86_CR4_PCIDE and not old_cr4 & X86_CR4_PCIDE:
        if kvm_read_cr3(vcpu) & X86_CR3_PCID_MASK or not is_long_mode(vcpu):
            return 1
    kvm_x86_ops.set_cr4(vcpu, cr4)
    # kvm_post_set_cr4: MMU/TLB work only (the silicon flushes on its own CR4 write).
    return 0


def lapic_in_kernel(vcpu: KvmVcpu) -> bool:
    """The VM made KVM_CREATE_IRQCHIP before this vCPU: its LAPIC is lapic.py's."""
    return vcpu.arch.apic is not None


def kvm_set_cr8(vcpu: KvmVcpu, cr8: int) -> int:
    """CR8 is the APIC's TPR[7:4] with an in-kernel LAPIC; without one KVM keeps it in vcpu->arch.cr8."""
    if cr8 & CR8_RESERVED_BITS:
        return 1
    if vcpu.arch.apic is not None:
        lapic.kvm_lapic_set_tpr(vcpu, cr8)
    else:
        vcpu.arch.cr8 = cr8
    return 0


def kvm_get_cr8(vcpu: KvmVcpu) -> int:
    if vcpu.arch.apic is not None:
        return lapic.kvm_lapic_get_cr8(vcpu)
    return vcpu.arch.cr8


# ---------------------------------------------------------------- debug registers

def kvm_require_dr(vcpu: KvmVcpu, dr: int) -> bool:
    """DR4/DR5 with CR4.DE: #UD (queued here), False."""
    if dr not in (4, 5) or not kvm_read_cr4(vcpu) & X86_CR4_DE:
        return True
    kvm_queue_exception(vcpu, Vector.UD)
    return False


def kvm_dr6_fixed(vcpu: KvmVcpu) -> int:
    fixed = DR6_FIXED_1
    if not guest_cpuid_has(vcpu, 7, 0, "ebx", 11):      # RTM
        fixed |= DR6_RTM
    if not guest_cpuid_has(vcpu, 7, 0, "ecx", 24):      # BUS_LOCK_DETECT
        fixed |= DR6_BUS_LOCK
    return fixed


def kvm_get_dr(vcpu: KvmVcpu, dr: int) -> int:
    arch = vcpu.arch
    if dr < 4:
        return arch.db[dr]
    if dr in (4, 6):
        return arch.dr6
    return arch.dr7


def kvm_set_dr(vcpu: KvmVcpu, dr: int, val: int) -> int:
    """1 (#GP) for DR6/DR7 values with bits 63:32 set; DR6/DR7 keep their fixed bits."""
    arch = vcpu.arch
    if dr < 4:
        arch.db[dr] = val
        kvm_update_dr7(vcpu)                      # kvm_update_dr0123: the CPU gets the new address
    elif dr in (4, 6):
        if val >> 32:
            return 1
        arch.dr6 = (val & DR6_VOLATILE) | kvm_dr6_fixed(vcpu)
    else:
        if val >> 32:
            return 1
        arch.dr7 = (val & DR7_VOLATILE) | DR7_FIXED_1
        kvm_update_dr7(vcpu)
    return 0


def kvm_update_dr7(vcpu: KvmVcpu) -> None:
    """The guest's DR7 into GUEST_DR7 (vmx_set_dr7) and DR0-3 into the CPU's debug registers, which
    KVM loads before VM entry whenever a DR7 enable bit is set (KVM_DEBUGREG_BP_ENABLED); while
    userspace debugs with hardware breakpoints (KVM_GUESTDBG_USE_HW_BP) its DR7 and DR0-3 instead."""
    arch = vcpu.arch
    debugger = vcpu.guest_debug & KVM_GUESTDBG_USE_HW_BP
    vcpu.hw.vmcs.guest_dr7 = arch.guest_debug_dr7 if debugger else arch.dr7
    vcpu.hw.set_debugregs(list(arch.eff_db if debugger else arch.db))
