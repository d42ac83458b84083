"""Model of arch/x86/kvm/cpuid.c: kvm_emulate_cpuid / kvm_cpuid over the entries set by KVM_SET_CPUID2.

The default table is what a VMM would set on a plausible Intel VMX host (Skylake-SP
class, after KVM's KVM_GET_SUPPORTED_CPUID filtering); scenarios override entries.  What it
advertises must run on the silicon (unicorn's hw/quirks.SILICON_CPU_MODEL): checked feature by
feature in tests/test_native_fidelity.py, which names the known gaps (AVX, AVX2, FMA, F16C).
"""

from __future__ import annotations

from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_exception import kvm_skip_emulated_instruction
from kvmsim.probe import PROBES, kfunc, tracepoint
from kvmsim.uapi import KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KvmCpuidEntry2


def _sig(s: str) -> tuple[int, int, int]:
    b = s.encode().ljust(12, b"\0")
    return tuple(int.from_bytes(b[i:i + 4], "little") for i in (0, 4, 8))  # type: ignore[return-value]


_GI = _sig("GenuineIntel")   # ebx, edx, ecx order below
_KVM = _sig("KVMKVMKVM")
_AMD_LIKE = (_sig("AuthenticAMD"), _sig("HygonGenuine"))

# (function, index, flags, eax, ebx, ecx, edx)
DEFAULT_CPUID: list[tuple[int, int, int, int, int, int, int]] = [
    (0x0, 0, 0, 0xD, _GI[0], _GI[2], _GI[1]),
    (0x1, 0, 0, 0x00050657, 0x00000800, 0xFFFA3203, 0x0F8BFBFF),  # HYPERVISOR bit set in ecx
    (0x7, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0, 0x009C07AB, 0x00000004, 0xAC000400),
    (0xD, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0x7, 0x340, 0x340, 0),
    (0xD, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0x1, 0, 0, 0),
    (0x40000000, 0, 0, 0x40000001, _KVM[0], _KVM[1], _KVM[2]),
    (0x40000001, 0, 0, 0x01007AFB, 0, 0, 0),
    (0x80000000, 0, 0, 0x80000008, 0, 0, 0),
    (0x80000001, 0, 0, 0, 0, 0x00000121, 0x2C100800),
    (0x80000008, 0, 0, 0x0000302E, 0, 0, 0),
]


def default_cpuid_entries() -> list[KvmCpuidEntry2]:
    return [KvmCpuidEntry2(function=f, index=i, flags=fl, eax=a, ebx=b, ecx=c, edx=d)
            for f, i, fl, a, b, c, d in DEFAULT_CPUID]


def kvm_find_cpuid_entry_index(vcpu: KvmVcpu, function: int, index: int) -> KvmCpuidEntry2 | None:
    for e in vcpu.arch.cpuid_entries:
        if e.function == function and (not e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX or e.index == index):
            return e
    return None


def guest_cpuid_is_amd_compatible(vcpu: KvmVcpu) -> bool:
    """vcpu->arch.is_amd_compatible: the vendor string of leaf 0 is AMD's or Hygon's."""
    basic = kvm_find_cpuid_entry_index(vcpu, 0, 0)
    return basic is not None and (basic.ebx, basic.edx, basic.ecx) in _AMD_LIKE


def guest_cpuid_is_intel_compatible(vcpu: KvmVcpu) -> bool:
    """Every vendor that is not AMD-compatible gets Intel's rules."""
    return not guest_cpuid_is_amd_compatible(vcpu)


def get_out_of_range_cpuid_entry(vcpu: KvmVcpu, function: int, index: int) -> tuple[KvmCpuidEntry2 | None, int]:
    """cpuid.c: a leaf above its class's maximum (or in a class that does not exist) reads as the
    max basic leaf, with the requested index; AMD and Hygon vendor strings get zeros instead.
    Returns (entry, the function whose leaf-specific rules apply: the max basic leaf when redirected)."""
    basic = kvm_find_cpuid_entry_index(vcpu, 0, 0)
    if basic is None or guest_cpuid_is_amd_compatible(vcpu):
        return None, function
    if 0x40000000 <= function <= 0x4FFFFFFF:
        cls = kvm_find_cpuid_entry_index(vcpu, function & 0xFFFFFF00, 0)
    elif function >= 0xC0000000:
        cls = kvm_find_cpuid_entry_index(vcpu, 0xC0000000, 0)
    else:
        cls = kvm_find_cpuid_entry_index(vcpu, function & 0x80000000, 0)
    if cls is not None and function <= cls.eax:
        return None, function
    return kvm_find_cpuid_entry_index(vcpu, basic.eax, index), basic.eax


def kvm_cpuid(vcpu: KvmVcpu, eax: int, ecx: int) -> tuple[int, int, int, int]:
    """Out-of-range leaves return the highest basic leaf, as Intel CPUs do; a missing subleaf of
    the topology leaves 0xb / 0x1f still passes CL through, with EDX (the x2APIC ID) from subleaf 1."""
    function = eax
    entry = kvm_find_cpuid_entry_index(vcpu, function, ecx)
    found = entry is not None
    used_max_basic = False
    if entry is None:
        entry, function = get_out_of_range_cpuid_entry(vcpu, function, ecx)
        used_max_basic = entry is not None
    if entry is not None:
        out = (entry.eax, entry.ebx, entry.ecx, entry.edx)
    else:
        out = (0, 0, 0, 0)
        if function in (0xB, 0x1F) and (sub := kvm_find_cpuid_entry_index(vcpu, function, 1)) is not None:
            out = (0, 0, ecx & 0xFF, sub.edx)
    if PROBES.enabled:
        tracepoint("kvm_cpuid", function=eax, index=ecx, rax=out[0], rbx=out[1], rcx=out[2], rdx=out[3],
                   found=found, used_max_basic=used_max_basic)
    return out


@kfunc()
def kvm_emulate_cpuid(vcpu: KvmVcpu) -> int:
    hw = vcpu.hw
    a, b, c, d = kvm_cpuid(vcpu, hw.reg("rax") & 0xFFFF_FFFF, hw.reg("rcx") & 0xFFFF_FFFF)
    for name, v in (("rax", a), ("rbx", b), ("rcx", c), ("rdx", d)):
        hw.set_reg(name, v)
    return kvm_skip_emulated_instruction(vcpu)
