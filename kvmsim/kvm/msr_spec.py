"""Model of the speculation-control MSRs in arch/x86/kvm/vmx/vmx.c (vmx_get_msr/vmx_set_msr:
MSR_IA32_SPEC_CTRL) and x86.c (kvm_get_msr_common/kvm_set_msr_common: MSR_IA32_PRED_CMD,
MSR_IA32_FLUSH_CMD, MSR_IA32_ARCH_CAPABILITIES).

Each exists for the guest only when its CPUID has the feature (guest_cpu_cap_has); otherwise an
access is #GP, as is a write of a bit neither the guest's CPUID nor the host allows.  The modelled
host is the Skylake-SP class CPU of cpuid.DEFAULT_CPUID: IBRS/IBPB, STIBP, SSBD and L1D flush,
no AMD-only SBPB.
"""

from __future__ import annotations

from kvmsim.kvm import cr
from kvmsim.kvm.vcpu import KvmVcpu

MSR_IA32_SPEC_CTRL, MSR_IA32_PRED_CMD = 0x48, 0x49
MSR_IA32_ARCH_CAPABILITIES, MSR_IA32_FLUSH_CMD = 0x10A, 0x10B
SPEC_MSRS = frozenset({MSR_IA32_SPEC_CTRL, MSR_IA32_PRED_CMD, MSR_IA32_ARCH_CAPABILITIES, MSR_IA32_FLUSH_CMD})

SPEC_CTRL_IBRS, SPEC_CTRL_STIBP, SPEC_CTRL_SSBD = 1 << 0, 1 << 1, 1 << 2
PRED_CMD_IBPB, PRED_CMD_SBPB = 1 << 0, 1 << 7
L1D_FLUSH = 1 << 0
# kvm_get_arch_capabilities on the modelled host: PSCHANGE_MC_NO always, SKIP_VMENTRY_L1DFLUSH
# because KVM flushes L1D on VM entry itself (l1tf=flush, the default on an L1TF-affected CPU).
ARCH_CAP_SKIP_VMENTRY_L1DFLUSH, ARCH_CAP_PSCHANGE_MC_NO = 1 << 3, 1 << 6
KVM_ARCH_CAPABILITIES = ARCH_CAP_SKIP_VMENTRY_L1DFLUSH | ARCH_CAP_PSCHANGE_MC_NO

# X86_FEATURE_* -> (leaf, subleaf, register, bit) of the guest's CPUID.
X86_FEATURE_SPEC_CTRL = (0x7, 0, "edx", 26)
X86_FEATURE_INTEL_STIBP = (0x7, 0, "edx", 27)
X86_FEATURE_FLUSH_L1D = (0x7, 0, "edx", 28)
X86_FEATURE_ARCH_CAPABILITIES = (0x7, 0, "edx", 29)
X86_FEATURE_SPEC_CTRL_SSBD = (0x7, 0, "edx", 31)
X86_FEATURE_AMD_IBPB = (0x80000008, 0, "ebx", 12)
X86_FEATURE_AMD_IBRS = (0x80000008, 0, "ebx", 14)
X86_FEATURE_AMD_STIBP = (0x80000008, 0, "ebx", 15)
X86_FEATURE_AMD_SSBD = (0x80000008, 0, "ebx", 24)
X86_FEATURE_SBPB = (0x80000021, 0, "eax", 27)
# The host features (boot_cpu_has) these MSRs need, on the modelled host.
HOST_HAS_IBPB, HOST_HAS_SBPB, HOST_HAS_FLUSH_L1D = True, False, True


def _has(vcpu: KvmVcpu, *features: tuple[int, int, str, int]) -> bool:
    return any(cr.guest_cpuid_has(vcpu, *f) for f in features)


def guest_has_spec_ctrl_msr(vcpu: KvmVcpu) -> bool:
    return _has(vcpu, X86_FEATURE_SPEC_CTRL, X86_FEATURE_AMD_STIBP, X86_FEATURE_AMD_IBRS, X86_FEATURE_AMD_SSBD)


def guest_has_pred_cmd_msr(vcpu: KvmVcpu) -> bool:
    return _has(vcpu, X86_FEATURE_SPEC_CTRL, X86_FEATURE_AMD_IBPB, X86_FEATURE_SBPB)


def kvm_spec_ctrl_valid_bits(vcpu: KvmVcpu) -> int:
    """The SPEC_CTRL bits this guest may set: each one needs its Intel or AMD CPUID bit."""
    bits = 0
    if _has(vcpu, X86_FEATURE_SPEC_CTRL, X86_FEATURE_AMD_IBRS):
        bits |= SPEC_CTRL_IBRS
    if _has(vcpu, X86_FEATURE_INTEL_STIBP, X86_FEATURE_AMD_STIBP):
        bits |= SPEC_CTRL_STIBP
    if _has(vcpu, X86_FEATURE_SPEC_CTRL_SSBD, X86_FEATURE_AMD_SSBD):
        bits |= SPEC_CTRL_SSBD
    return bits


def get(vcpu: KvmVcpu, index: int, host_initiated: bool) -> tuple[int, int]:
    """(0, value) or (1, 0) for #GP.  PRED_CMD and FLUSH_CMD are write-only: no read handler."""
    if index == MSR_IA32_SPEC_CTRL:
        if not host_initiated and not guest_has_spec_ctrl_msr(vcpu):
            return 1, 0
        return 0, vcpu.arch.msrs.get(index, 0)
    if index == MSR_IA32_ARCH_CAPABILITIES:
        if not host_initiated and not _has(vcpu, X86_FEATURE_ARCH_CAPABILITIES):
            return 1, 0
        return 0, vcpu.arch.msrs.get(index, KVM_ARCH_CAPABILITIES)
    return 1, 0


def set(vcpu: KvmVcpu, index: int, data: int, host_initiated: bool) -> int:  # noqa: A001 - the kernel's verb
    """0, or 1 for #GP.  A write KVM accepts changes no guest-visible state beyond SPEC_CTRL's value
    (IBPB and the L1D flush are barriers).  Simplified: KVM stops intercepting SPEC_CTRL after its
    first non-zero write; here every access still exits."""
    if index == MSR_IA32_SPEC_CTRL:
        if not host_initiated and not guest_has_spec_ctrl_msr(vcpu):
            return 1
        if data & ~kvm_spec_ctrl_valid_bits(vcpu):
            return 1
        vcpu.arch.msrs[index] = data
        return 0
    if index == MSR_IA32_PRED_CMD:
        reserved = ~(PRED_CMD_IBPB | PRED_CMD_SBPB)
        if not host_initiated:
            if not guest_has_pred_cmd_msr(vcpu):
                return 1
            if not _has(vcpu, X86_FEATURE_SPEC_CTRL, X86_FEATURE_AMD_IBPB):
                reserved |= PRED_CMD_IBPB
            if not _has(vcpu, X86_FEATURE_SBPB):
                reserved |= PRED_CMD_SBPB
        reserved |= (0 if HOST_HAS_IBPB else PRED_CMD_IBPB) | (0 if HOST_HAS_SBPB else PRED_CMD_SBPB)
        return 1 if data & reserved else 0
    if index == MSR_IA32_FLUSH_CMD:
        if not host_initiated and not _has(vcpu, X86_FEATURE_FLUSH_L1D):
            return 1
        return 1 if not HOST_HAS_FLUSH_L1D or data & ~L1D_FLUSH else 0
    # MSR_IA32_ARCH_CAPABILITIES: only userspace may set it (KVM_SET_MSRS), within what KVM supports
    if not host_initiated or data & ~KVM_ARCH_CAPABILITIES:
        return 1
    vcpu.arch.msrs[index] = data
    return 0
