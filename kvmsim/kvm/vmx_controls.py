"""Model of the VM-execution controls and CR0/CR4 ownership KVM programs (vmx.c: init_vmcs,
vmx_exec_control, vmx_secondary_exec_control, set_cr4_guest_host_mask, vmx_set_cr0, vmx_set_cr4).

One table per control field: each control with the condition under which KVM sets it for this
model's configuration (EPT and unrestricted guest on, LAPIC in userspace or in the kernel without
TPR shadow and APICv, nested off) and why.
The silicon reads the result from the VMCS (hw/vmcs.py) to decide which instructions exit.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from kvmsim.hw import vmcs as V
from kvmsim.kvm import cr, lapic
from kvmsim.kvm.vcpu import KvmVcpu

KVM_X86_DISABLE_EXITS_MWAIT, KVM_X86_DISABLE_EXITS_HLT, KVM_X86_DISABLE_EXITS_PAUSE = 1, 2, 4


class Control(NamedTuple):
    bit: int
    when: Callable[[KvmVcpu], bool]
    why: str


def _always(vcpu: KvmVcpu) -> bool:
    return True


def _never(vcpu: KvmVcpu) -> bool:
    return False


def _ept(vcpu: KvmVcpu) -> bool:
    return vcpu.kvm.params.enable_ept


def _unrestricted(vcpu: KvmVcpu) -> bool:
    return vcpu.kvm.params.enable_ept and vcpu.kvm.params.unrestricted_guest


def _tpr_shadow(vcpu: KvmVcpu) -> bool:
    # Off: the TPR shadow / virtual-APIC page is not modelled, so CR8 exits to kvm_set_cr8 → the APIC's TPR.
    return False


def _apic_access(vcpu: KvmVcpu) -> bool:
    """flexpriority: the xAPIC page exits as APIC_ACCESS while the in-kernel LAPIC is in xAPIC mode."""
    return cr.lapic_in_kernel(vcpu) and lapic.kvm_apic_mode(vcpu.arch.apic_base) == lapic.LAPIC_MODE_XAPIC


def _disabled(flag: int) -> Callable[[KvmVcpu], bool]:
    return lambda vcpu: not vcpu.kvm.params.disable_exits & flag


def _pause_loop(vcpu: KvmVcpu) -> bool:
    return vcpu.kvm.params.ple_gap != 0 and not vcpu.kvm.params.disable_exits & KVM_X86_DISABLE_EXITS_PAUSE


def _guest_has(leaf: int, sub: int, reg: str, bit: int) -> Callable[[KvmVcpu], bool]:
    return lambda vcpu: cr.guest_cpuid_has(vcpu, leaf, sub, reg, bit)


def _guest_lacks(leaf: int, sub: int, reg: str, bit: int) -> Callable[[KvmVcpu], bool]:
    return lambda vcpu: not cr.guest_cpuid_has(vcpu, leaf, sub, reg, bit)


# vmx_exec_control(): CPU_BASED_VM_EXEC_CONTROL at vCPU creation.
PRIMARY: tuple[Control, ...] = (
    Control(V.CPU_BASED_INTR_WINDOW_EXITING, _never, "set only while an IRQ waits for a window"),
    Control(V.CPU_BASED_USE_TSC_OFFSETTING, _always, "required: the guest TSC is the host's plus an offset"),
    Control(V.CPU_BASED_HLT_EXITING, _disabled(KVM_X86_DISABLE_EXITS_HLT),
            "required; cleared only by KVM_CAP_X86_DISABLE_EXITS(HLT)"),
    Control(V.CPU_BASED_INVLPG_EXITING, lambda v: not _ept(v), "with EPT there are no shadow pages to sync"),
    Control(V.CPU_BASED_MWAIT_EXITING, _disabled(KVM_X86_DISABLE_EXITS_MWAIT),
            "required; cleared only by KVM_CAP_X86_DISABLE_EXITS(MWAIT)"),
    Control(V.CPU_BASED_RDPMC_EXITING, _always, "required: the PMU is virtualised by KVM"),
    Control(V.CPU_BASED_RDTSC_EXITING, _never, "cleared: TSC offsetting makes RDTSC native (nested only)"),
    Control(V.CPU_BASED_CR3_LOAD_EXITING, lambda v: not _ept(v),
            "EPT: the guest owns CR3 (without unrestricted guest vmx_set_cr0 sets it while CR0.PG=0)"),
    Control(V.CPU_BASED_CR3_STORE_EXITING, lambda v: not _ept(v), "as CR3 load exiting"),
    Control(V.CPU_BASED_CR8_LOAD_EXITING, lambda v: not _tpr_shadow(v),
            "no TPR shadow without an in-kernel LAPIC: KVM keeps the TPR in arch.cr8"),
    Control(V.CPU_BASED_CR8_STORE_EXITING, lambda v: not _tpr_shadow(v), "as CR8 load exiting"),
    Control(V.CPU_BASED_TPR_SHADOW, _tpr_shadow, "only with an in-kernel LAPIC (cpu_need_tpr_shadow)"),
    Control(V.CPU_BASED_NMI_WINDOW_EXITING, _never, "set only while an NMI waits for a window"),
    Control(V.CPU_BASED_MOV_DR_EXITING, _always,
            "required; handle_dr clears it for a while (KVM_DEBUGREG_WONT_EXIT, not modelled)"),
    Control(V.CPU_BASED_UNCOND_IO_EXITING, _always, "required: every IN/OUT/INS/OUTS exits"),
    Control(V.CPU_BASED_USE_IO_BITMAPS, _never, "cleared: unconditional I/O exiting instead (nested only)"),
    Control(V.CPU_BASED_MONITOR_TRAP_FLAG, _never, "cleared: MTF is for nested and guest debugging"),
    Control(V.CPU_BASED_USE_MSR_BITMAPS, _always, "pass-through MSRs do not exit"),
    Control(V.CPU_BASED_MONITOR_EXITING, _disabled(KVM_X86_DISABLE_EXITS_MWAIT), "as MWAIT exiting"),
    Control(V.CPU_BASED_PAUSE_EXITING, _never, "cleared: PAUSE exits through PAUSE-loop exiting (secondary)"),
    Control(V.CPU_BASED_ACTIVATE_SECONDARY_CONTROLS, _always, "the CPU has secondary controls"),
)

# vmx_secondary_exec_control(): SECONDARY_VM_EXEC_CONTROL at vCPU creation and after KVM_SET_CPUID2.
SECONDARY: tuple[Control, ...] = (
    Control(V.SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES, _apic_access,
            "only with an in-kernel LAPIC in xAPIC mode (lapic.py toggles it on an APIC mode change)"),
    Control(V.SECONDARY_EXEC_ENABLE_EPT, _ept, "kvm_intel.ept=1"),
    Control(V.SECONDARY_EXEC_DESC, _never, "toggled by vmx_set_cr4 on CR4.UMIP when KVM emulates UMIP"),
    Control(V.SECONDARY_EXEC_ENABLE_RDTSCP, lambda v: (cr.guest_cpuid_has(v, 0x80000001, 0, "edx", 27)
                                                        or cr.guest_cpuid_has(v, 7, 0, "ecx", 22)),
            "when the guest's CPUID has RDTSCP or RDPID (else they #UD)"),
    Control(V.SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE, _never, "set later by the in-kernel LAPIC only"),
    Control(V.SECONDARY_EXEC_ENABLE_VPID, _always, "kvm_intel.vpid=1: the vCPU has a VPID"),
    Control(V.SECONDARY_EXEC_WBINVD_EXITING, _always, "WBINVD exits (emulated as a no-op without assigned devices)"),
    Control(V.SECONDARY_EXEC_UNRESTRICTED_GUEST, _unrestricted, "kvm_intel.unrestricted_guest=1 (needs EPT)"),
    Control(V.SECONDARY_EXEC_APIC_REGISTER_VIRT, _never,
            "enable_apicv=0, as on this host (kvm_pvm has no APICv): APIC_WRITE never exits"),
    Control(V.SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY, _never,
            "enable_apicv=0, as on this host (kvm_pvm has no APICv): EOI_INDUCED never exits"),
    Control(V.SECONDARY_EXEC_PAUSE_LOOP_EXITING, _pause_loop, "ple_gap != 0 and PAUSE exits not disabled"),
    Control(V.SECONDARY_EXEC_RDRAND_EXITING, _guest_lacks(1, 0, "ecx", 30),
            "exiting control: set when the guest's CPUID lacks RDRAND (the exit gives #UD)"),
    Control(V.SECONDARY_EXEC_ENABLE_INVPCID, _guest_has(7, 0, "ebx", 10),
            "feature control: when the guest's CPUID has INVPCID (else INVPCID #UDs natively)"),
    Control(V.SECONDARY_EXEC_ENABLE_VMFUNC, _never, "nested only"),
    Control(V.SECONDARY_EXEC_SHADOW_VMCS, _never, "nested only"),
    Control(V.SECONDARY_EXEC_ENCLS_EXITING, _never, "the modelled CPU has no SGX"),
    Control(V.SECONDARY_EXEC_RDSEED_EXITING, _guest_lacks(7, 0, "ebx", 18),
            "exiting control: set when the guest's CPUID lacks RDSEED (the exit gives #UD)"),
    Control(V.SECONDARY_EXEC_ENABLE_PML, lambda v: bool(v.kvm.dirty_log_slots),
            "kvm_intel.pml=1, while a memslot logs dirty pages (KVM_MEM_LOG_DIRTY_PAGES)"),
    Control(V.SECONDARY_EXEC_ENABLE_XSAVES, _guest_has(0xD, 1, "eax", 3), "when the guest's CPUID has XSAVES"),
    Control(V.SECONDARY_EXEC_TSC_SCALING, _always, "the CPU supports it; ratio 1 unless userspace sets a TSC rate"),
    Control(V.SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE, _guest_has(7, 0, "ecx", 5), "when the guest has WAITPKG"),
    Control(V.SECONDARY_EXEC_BUS_LOCK_DETECTION, lambda v: v.kvm.params.bus_lock_detection_exit,
            "KVM_CAP_X86_BUS_LOCK_EXIT with KVM_BUS_LOCK_DETECTION_EXIT"),
    Control(V.SECONDARY_EXEC_NOTIFY_VM_EXITING, lambda v: bool(v.kvm.params.notify_vmexit_flags & 1),
            "KVM_CAP_X86_NOTIFY_VMEXIT with KVM_X86_NOTIFY_VMEXIT_ENABLED"),
)


def _build(table: tuple[Control, ...], vcpu: KvmVcpu) -> int:
    value = 0
    for c in table:
        if c.when(vcpu):
            value |= c.bit
    return value


def vmx_exec_control(vcpu: KvmVcpu) -> int:
    return _build(PRIMARY, vcpu)


def vmx_secondary_exec_control(vcpu: KvmVcpu) -> int:
    return _build(SECONDARY, vcpu)


# ---------------------------------------------------------------- CR0/CR4 ownership

# With EPT the guest may own CR0.TS and CR0.WP (KVM_POSSIBLE_CR0_GUEST_BITS); all else exits.
KVM_POSSIBLE_CR0_GUEST_BITS = cr.X86_CR0_TS | cr.X86_CR0_WP
KVM_POSSIBLE_CR4_GUEST_BITS = (cr.X86_CR4_PVI | cr.X86_CR4_DE | cr.X86_CR4_PCE | cr.X86_CR4_OSFXSR
                               | cr.X86_CR4_OSXMMEXCPT | cr.X86_CR4_PGE | cr.X86_CR4_TSD | cr.X86_CR4_FSGSBASE)
X86_CR4_TLBFLUSH_BITS = cr.X86_CR4_PGE | cr.X86_CR4_PCIDE | cr.X86_CR4_PAE | cr.X86_CR4_SMEP
_ULONG = (1 << 64) - 1


def vmx_l1_guest_owned_cr0_bits(vcpu: KvmVcpu) -> int:
    bits = KVM_POSSIBLE_CR0_GUEST_BITS
    if not _ept(vcpu):
        bits &= ~cr.X86_CR0_WP     # shadow paging builds SPTEs from CR0.WP
    return bits


def set_cr4_guest_host_mask(vcpu: KvmVcpu) -> None:
    """The guest owns the possible CR4 bits its CPUID allows; without EPT not the TLB/PDPTR ones."""
    arch = vcpu.arch
    owned = KVM_POSSIBLE_CR4_GUEST_BITS & ~arch.cr4_guest_rsvd_bits
    if not _ept(vcpu):
        owned &= ~(X86_CR4_TLBFLUSH_BITS | cr.X86_CR4_PDPTR_BITS)
    arch.cr4_guest_owned_bits = owned
    vcpu.hw.vmcs.cr4_guest_host_mask = ~owned & _ULONG


def vmx_umip_emulated(vcpu: KvmVcpu) -> bool:
    """The host lacks UMIP but has descriptor-table exiting: KVM advertises and emulates UMIP."""
    return not vcpu.kvm.params.host_umip


def init_vmcs(vcpu: KvmVcpu) -> None:
    """vmx_vcpu_create → init_vmcs: the controls and CR ownership of a new vCPU."""
    v = vcpu.hw.vmcs
    v.cpu_based_vm_exec_control = vmx_exec_control(vcpu)
    v.secondary_vm_exec_control = vmx_secondary_exec_control(vcpu)
    vcpu.arch.cr0_guest_owned_bits = vmx_l1_guest_owned_cr0_bits(vcpu)
    v.cr0_guest_host_mask = ~vcpu.arch.cr0_guest_owned_bits & _ULONG
    vcpu.arch.cr4_guest_rsvd_bits = 0      # until KVM_SET_CPUID2 (kvm_vcpu_after_set_cpuid)
    set_cr4_guest_host_mask(vcpu)
    if v.secondary_vm_exec_control & V.SECONDARY_EXEC_PAUSE_LOOP_EXITING:
        vcpu.arch.ple_window = vcpu.kvm.params.ple_window
        v.ple_gap, v.ple_window = vcpu.kvm.params.ple_gap, vcpu.arch.ple_window
    if v.secondary_vm_exec_control & V.SECONDARY_EXEC_NOTIFY_VM_EXITING:
        v.notify_window = vcpu.kvm.params.notify_window


def vmx_vcpu_after_set_cpuid(vcpu: KvmVcpu) -> None:
    """KVM_SET_CPUID2: CR4 reserved bits and the CPUID-dependent secondary controls follow the guest's CPUID."""
    vcpu.arch.cr4_guest_rsvd_bits = cr.cr4_guest_rsvd_bits(vcpu)
    v = vcpu.hw.vmcs
    keep = v.secondary_vm_exec_control & V.SECONDARY_EXEC_DESC   # owned by vmx_set_cr4
    v.secondary_vm_exec_control = vmx_secondary_exec_control(vcpu) | keep
    set_cr4_guest_host_mask(vcpu)


# ---------------------------------------------------------------- vmx_set_cr0 / vmx_set_cr4

KVM_VM_CR0_ALWAYS_OFF = cr.X86_CR0_NW | cr.X86_CR0_CD
KVM_VM_CR0_ALWAYS_ON_UNRESTRICTED_GUEST = cr.X86_CR0_NE
VMX_AR_TYPE_BUSY_64_TSS = 11


def vmx_set_cr0(vcpu: KvmVcpu, cr0: int) -> None:
    """Read shadow = the guest's CR0; the CPU's CR0 too; EFER.LMA on a paging switch with LME."""
    hw = vcpu.hw
    powered = hw.uc is not None            # before power-on the CPU takes CR0 from KVM_SET_SREGS
    old_pg = cr.kvm_read_cr0(vcpu) & cr.X86_CR0_PG if powered else 0
    hw.vmcs.cr0_read_shadow = cr0
    # Simplified: GUEST_CR0 gets the guest's value, without KVM's forced NE (and cleared CD/NW) and,
    # without EPT, its forced PG|WP: the silicon walks the guest's tables, which the shadow MMU mirrors.
    if powered:
        hw.set_cr(0, cr0)
        if hw.efer() & cr.EFER_LME:
            if not old_pg and cr0 & cr.X86_CR0_PG:
                enter_lmode(vcpu)
            elif old_pg and not cr0 & cr.X86_CR0_PG:
                exit_lmode(vcpu)
    if _ept(vcpu) and not _unrestricted(vcpu):
        v = hw.vmcs
        cr3_exiting = V.CPU_BASED_CR3_LOAD_EXITING | V.CPU_BASED_CR3_STORE_EXITING
        if cr0 & cr.X86_CR0_PG:
            v.cpu_based_vm_exec_control &= ~cr3_exiting
        else:
            v.cpu_based_vm_exec_control |= cr3_exiting


def enter_lmode(vcpu: KvmVcpu) -> None:
    """EFER.LMA with CR0.PG and LME.  (KVM also forces TR's type to a busy 64-bit TSS; not modelled.)"""
    vmx_set_efer(vcpu, vcpu.hw.efer() | cr.EFER_LMA)


def exit_lmode(vcpu: KvmVcpu) -> None:
    vmx_set_efer(vcpu, vcpu.hw.efer() & ~cr.EFER_LMA)


def vmx_set_efer(vcpu: KvmVcpu, efer: int) -> None:
    """GUEST_EFER and VM_ENTRY_IA32E_MODE: the silicon derives LMA from LME and CR0.PG itself."""
    vcpu.hw.set_efer(efer)


def vmx_set_cr4(vcpu: KvmVcpu, cr4: int) -> None:
    """Read shadow = the guest's CR4; UMIP emulated by descriptor-table exiting when the host lacks it."""
    hw = vcpu.hw
    hw_cr4 = cr4
    if vmx_umip_emulated(vcpu):
        if cr4 & cr.X86_CR4_UMIP:
            hw.vmcs.secondary_vm_exec_control |= V.SECONDARY_EXEC_DESC
            hw_cr4 &= ~cr.X86_CR4_UMIP
        else:
            hw.vmcs.secondary_vm_exec_control &= ~V.SECONDARY_EXEC_DESC
    hw.vmcs.cr4_read_shadow = cr4
    # Simplified: GUEST_CR4 without KVM's forced VMXE and the host's MCE.
    if hw.uc is not None:
        hw.set_cr(4, hw_cr4)

