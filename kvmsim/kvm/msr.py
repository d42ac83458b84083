"""Model of arch/x86/kvm/x86.c MSR emulation: kvm_emulate_rdmsr/wrmsr, kvm_msr_user_space.

In-kernel MSRs are a table (index → default); an index KVM does not know is
KVM_MSR_RET_UNSUPPORTED: #GP, or KVM_EXIT_X86_RDMSR/WRMSR when userspace asked for
KVM_MSR_EXIT_REASON_UNKNOWN with KVM_CAP_X86_USER_SPACE_MSR.  The checks __kvm_set_msr makes
before any handler (canonical addresses, TSC_AUX) come first; the speculation-control MSRs, which
exist only when the guest's CPUID has their feature, are in msr_spec.py.
"""

from __future__ import annotations

from kvmsim.hw.apicdef import APIC_BASE_RESET
from kvmsim.kvm import cpuid, cr, lapic, msr_spec
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_exception import kvm_complete_insn_gp
from kvmsim.probe import kfunc, tracepoint
from kvmsim.uapi import KvmExit, KvmMsrExitReason

KVM_MSR_RET_UNSUPPORTED = 2
KVM_MSR_RET_FILTERED = 3

# Index → reset value of the MSRs this model emulates in the kernel (a subset of emulated_msrs[]).
KVM_MSRS: dict[int, int] = {
    0x10: 0,                    # MSR_IA32_TSC
    0x1B: APIC_BASE_RESET,      # MSR_IA32_APICBASE (BSP, xAPIC enabled)
    0x3A: 0,                    # MSR_IA32_FEAT_CTL
    0x8B: 0x100000000,          # MSR_IA32_UCODE_REV
    0xFE: 0x508,                # MSR_MTRRcap
    0x174: 0, 0x175: 0, 0x176: 0,  # MSR_IA32_SYSENTER_CS/ESP/EIP
    0x179: 0, 0x17A: 0,         # MSR_IA32_MCG_CAP / MCG_STATUS
    0x1A0: 0x1,                 # MSR_IA32_MISC_ENABLE (fast strings)
    0x277: 0x0007040600070406,  # MSR_IA32_CR_PAT
    0x2FF: 0,                   # MSR_MTRRdefType
    0xC0000080: 0,              # MSR_EFER
    0xC0000081: 0, 0xC0000082: 0, 0xC0000083: 0, 0xC0000084: 0,  # STAR, LSTAR, CSTAR, SYSCALL_MASK
    0xC0000100: 0, 0xC0000101: 0, 0xC0000102: 0,  # FS_BASE, GS_BASE, KERNEL_GS_BASE
    0xC0000103: 0,              # MSR_TSC_AUX
    0x4B564D00: 0, 0x4B564D01: 0,  # MSR_KVM_WALL_CLOCK_NEW / SYSTEM_TIME_NEW
}

# vmx_vcpu_create: MSRs whose intercepts are disabled in the MSR bitmap (no VM exit).
VMX_PASSTHROUGH_MSRS = frozenset({0xC0000100, 0xC0000101, 0xC0000102, 0x174, 0x175, 0x176})

MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE = 0xC0000100, 0xC0000101, 0xC0000102
MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK = 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084
MSR_TSC_AUX = 0xC0000103
# __kvm_set_msr: these hold a linear address; a non-canonical one is #GP (for the host's
# virtual-address width, max_host_virt_addr_bits: 48 on the modelled host, which has no LA57).
CANONICAL_ADDRESS_MSRS = frozenset({MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_CSTAR, MSR_LSTAR})
# vmx_uret_msrs_list: guest values KVM loads into the CPU before VM entry (kvm_set_user_return_msr),
# so SYSCALL, SYSRET and RDTSCP executed by the guest use them without an exit.
VMX_URET_MSRS = frozenset({MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_TSC_AUX})
# kvm_get/set_msr_common: the legacy performance-counter MSRs (K7 PERFCTR/EVNTSEL 0-3, P6 PERFCTR/
# EVNTSEL 0-1) read 0 and ignore writes when no vPMU claims them (kvm_pmu_is_valid_msr; kvmsim
# models no PMU), so a guest may reset counters it has not probed.
LEGACY_PMU_MSRS = frozenset({*range(0xC0010000, 0xC0010008), 0xC1, 0xC2, 0x186, 0x187})
X86_FEATURE_RDTSCP = (0x80000001, 0, "edx", 27)
X86_FEATURE_RDPID = (0x7, 0, "ecx", 22)


def is_noncanonical_msr_address(data: int) -> bool:
    return (data >> 47) not in (0, 0x1FFFF)


def _tsc_aux_allowed(vcpu: KvmVcpu, host_initiated: bool) -> bool:
    """MSR_TSC_AUX exists for the guest when its CPUID has RDTSCP or RDPID."""
    return host_initiated or cr.guest_cpuid_has(vcpu, *X86_FEATURE_RDTSCP) or \
        cr.guest_cpuid_has(vcpu, *X86_FEATURE_RDPID)


def kvm_get_msr(vcpu: KvmVcpu, index: int, host_initiated: bool = False) -> tuple[int, int]:
    """(0, value), (1, 0) for #GP, or (KVM_MSR_RET_UNSUPPORTED, 0)."""
    if index == MSR_TSC_AUX and not _tsc_aux_allowed(vcpu, host_initiated):
        return 1, 0
    if index in msr_spec.SPEC_MSRS:
        return msr_spec.get(vcpu, index, host_initiated)
    if index in LEGACY_PMU_MSRS:
        return 0, 0
    if 0x800 <= index <= 0x8FF and vcpu.arch.apic is not None:     # x2APIC registers
        return lapic.kvm_x2apic_msr_read(vcpu, index)
    if index == lapic.MSR_IA32_TSC_DEADLINE and vcpu.arch.apic is not None:
        return 0, lapic.kvm_get_lapic_tscdeadline_msr(vcpu)
    if index == 0x1B:
        return 0, vcpu.arch.apic_base                               # kvm_get_apic_base
    if index == 0x10:
        return 0, lapic.kvm_read_l1_tsc(vcpu)                       # MSR_IA32_TSC: the virtual TSC
    if index not in KVM_MSRS:
        return KVM_MSR_RET_UNSUPPORTED, 0
    if index == 0xC0000080:
        return 0, vcpu.hw.efer()
    return 0, vcpu.arch.msrs.get(index, KVM_MSRS[index])


def kvm_set_msr(vcpu: KvmVcpu, index: int, data: int, host_initiated: bool = False) -> int:
    """0, 1 for #GP, or KVM_MSR_RET_UNSUPPORTED.  Steps as __kvm_set_msr, then kvm_set_msr_common."""
    if index in CANONICAL_ADDRESS_MSRS and is_noncanonical_msr_address(data):      # 1
        return 1
    if index == MSR_TSC_AUX:
        if not _tsc_aux_allowed(vcpu, host_initiated):
            return 1
        if cpuid.guest_cpuid_is_intel_compatible(vcpu) and data >> 32:    # bits 63:32 reserved (SDM)
            return 1
        data &= 0xFFFF_FFFF
    if index in msr_spec.SPEC_MSRS:
        return msr_spec.set(vcpu, index, data, host_initiated)
    if index in LEGACY_PMU_MSRS:
        return 0                            # (a non-zero value is kvm_pr_unimpl_wrmsr's log line)
    if 0x800 <= index <= 0x8FF and vcpu.arch.apic is not None:
        return lapic.kvm_x2apic_msr_write(vcpu, index, data)
    if index == lapic.MSR_IA32_TSC_DEADLINE and vcpu.arch.apic is not None:
        lapic.kvm_set_lapic_tscdeadline_msr(vcpu, data)
        return 0
    if index == 0x1B:
        return lapic.kvm_apic_set_base(vcpu, data, host_initiated)
    if index == 0x10:
        lapic.kvm_write_l1_tsc(vcpu, data)
        return 0
    if index not in KVM_MSRS:
        return KVM_MSR_RET_UNSUPPORTED
    if index == 0xC0000080:
        if set_efer(vcpu, data):
            return 1
    vcpu.arch.msrs[index] = data
    if index in VMX_URET_MSRS:
        vcpu.hw.load_msr(index, data)       # kvm_set_user_return_msr: the CPU uses it from now on
    return 0


EFER_SCE, EFER_LME, EFER_LMA, EFER_NX = 1 << 0, 1 << 8, 1 << 10, 1 << 11


def __kvm_valid_efer(vcpu: KvmVcpu, efer: int) -> bool:
    """LME/LMA need CPUID long mode, NXE needs NX (0x80000001 EDX bits 29 and 20)."""
    if efer & (EFER_LME | EFER_LMA) and not cr.guest_cpuid_has(vcpu, 0x80000001, 0, "edx", 29):
        return False
    return not (efer & EFER_NX and not cr.guest_cpuid_has(vcpu, 0x80000001, 0, "edx", 20))


def set_efer(vcpu: KvmVcpu, efer: int) -> int:
    """WRMSR(EFER) by the guest: 1 (#GP) for reserved bits, features the guest lacks, or LME
    changed while paging is on; LMA is the CPU's (vmx_set_efer keeps it), not the written bit."""
    if efer & ~(EFER_SCE | EFER_LME | EFER_LMA | EFER_NX):
        return 1
    if not __kvm_valid_efer(vcpu, efer):
        return 1
    if cr.is_paging(vcpu) and (vcpu.hw.efer() ^ efer) & EFER_LME:
        return 1
    vcpu.hw.set_efer(efer)
    return 0


def kvm_msr_reason(r: int) -> KvmMsrExitReason:
    if r == KVM_MSR_RET_UNSUPPORTED:
        return KvmMsrExitReason.UNKNOWN
    if r == KVM_MSR_RET_FILTERED:
        return KvmMsrExitReason.FILTER
    return KvmMsrExitReason.INVAL


def kvm_msr_user_space(vcpu: KvmVcpu, index: int, exit_reason: KvmExit, data: int, completion, r: int) -> int:
    """Fill a KVM_EXIT_X86_RDMSR/WRMSR exit if userspace asked for this reason; 1 when it did."""
    reason = kvm_msr_reason(r)
    if not vcpu.kvm.user_space_msr_mask & reason:
        return 0
    run = vcpu.run
    run.exit_reason = exit_reason
    run.msr.error = 0
    run.msr.reason, run.msr.index, run.msr.data = int(reason), index, data
    vcpu.arch.complete_userspace_io = completion
    return 1


def _trace_msr(write: bool, ecx: int, data: int, exception: bool) -> None:
    tracepoint("kvm_msr", write=int(write), ecx=ecx, data=data, exception=exception)


@kfunc()
def kvm_emulate_rdmsr(vcpu: KvmVcpu) -> int:
    ecx = vcpu.hw.reg("rcx") & 0xFFFF_FFFF
    r, data = kvm_get_msr(vcpu, ecx)
    if r == 0:
        _trace_msr(False, ecx, data, False)
        vcpu.hw.set_reg("rax", data & 0xFFFF_FFFF)
        vcpu.hw.set_reg("rdx", data >> 32)
    else:
        if kvm_msr_user_space(vcpu, ecx, KvmExit.X86_RDMSR, 0, complete_fast_rdmsr, r):
            return 0
        _trace_msr(False, ecx, 0, True)
    return kvm_complete_insn_gp(vcpu, r)


@kfunc()
def kvm_emulate_wrmsr(vcpu: KvmVcpu) -> int:
    ecx = vcpu.hw.reg("rcx") & 0xFFFF_FFFF
    data = (vcpu.hw.reg("rdx") & 0xFFFF_FFFF) << 32 | (vcpu.hw.reg("rax") & 0xFFFF_FFFF)
    r = kvm_set_msr(vcpu, ecx, data)
    if r == 0:
        _trace_msr(True, ecx, data, False)
    else:
        if kvm_msr_user_space(vcpu, ecx, KvmExit.X86_WRMSR, data, complete_fast_msr_access, r):
            return 0
        _trace_msr(True, ecx, data, True)
    return kvm_complete_insn_gp(vcpu, r)


@kfunc()
def complete_fast_rdmsr(vcpu: KvmVcpu) -> int:
    if not vcpu.run.msr.error:
        vcpu.hw.set_reg("rax", vcpu.run.msr.data & 0xFFFF_FFFF)
        vcpu.hw.set_reg("rdx", vcpu.run.msr.data >> 32)
    return complete_fast_msr_access(vcpu)


@kfunc()
def complete_fast_msr_access(vcpu: KvmVcpu) -> int:
    """vmx complete_emulated_msr: #GP if userspace set msr.error, else skip."""
    return kvm_complete_insn_gp(vcpu, vcpu.run.msr.error)
