"""The VMM's side of KVM_SET_CPUID2: which leaves have subleaves, and a replacing table's entries.

A VMM marks an entry KVM_CPUID_FLAG_SIGNIFCANT_INDEX when the leaf's answer depends on ECX;
KVM then matches the index exactly (kvm_find_cpuid_entry_index), otherwise any ECX finds it.
The leaves are those of the kernel's cpuid_function_is_indexed (arch/x86/include/asm/cpuid/api.h,
which KVM_GET_SUPPORTED_CPUID follows and QEMU mirrors).
"""

from __future__ import annotations

from typing import Any, Iterable

from kvmsim.uapi import KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KvmCpuidEntry2

# deterministic cache params, ext. features, ext. topology, XSAVE, RDT monitoring, RDT allocation,
# SGX, PT, SoC vendor, TLB, AMX palette, AMX TMUL, V2 ext. topology, AVX10, AMD cache topology
INDEXED_LEAVES = frozenset({0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1E, 0x1F, 0x24,
                            0x8000001D})


def cpuid_function_is_indexed(function: int) -> bool:
    return function in INDEXED_LEAVES


def table_entries(entries: Iterable[Any]) -> list[KvmCpuidEntry2]:
    """kvm_cpuid_entry2s for KVM_SET_CPUID2, in the order given, flags set by leaf."""
    return [KvmCpuidEntry2(function=e.function, index=e.index, eax=e.eax, ebx=e.ebx, ecx=e.ecx, edx=e.edx,
                           flags=KVM_CPUID_FLAG_SIGNIFCANT_INDEX if cpuid_function_is_indexed(e.function) else 0)
            for e in entries]
