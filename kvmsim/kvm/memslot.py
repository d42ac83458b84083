"""KVM_SET_USER_MEMORY_REGION's checks (the memslot half of virt/kvm/kvm_main.c, and x86's
kvm_arch_prepare_memory_region): which arguments the ioctl refuses, with which errno.

Pure functions with no engine behind them, so that the scenario schema (`check`) and the sim's
VM fd (`run`, kvm/kvm_main.SimVmFd) ask the same code: one validation path.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass

from kvmsim.uapi import KVM_MEM_READONLY

PAGE_SHIFT = 12
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_GUEST_MEMFD = 1 << 2
KVM_SET_USER_MEMORY_REGION_V1_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY
KVM_MEM_SLOTS_NUM = 0x7FFF                      # SHRT_MAX
KVM_INTERNAL_MEM_SLOTS = 3                      # x86: TSS, identity map, APIC access page
KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS
KVM_MAX_NR_ADDRESS_SPACES = 1                   # no SMM address space: the model has no SMM (as CONFIG_KVM_SMM=n)
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1
TASK_SIZE_MAX = (1 << 47) - (1 << PAGE_SHIFT)   # x86-64 with 4-level paging: access_ok's bound
# CPUID 0x80000008 EAX of the modelled host (the Skylake-SP class of kvm/cpuid.py): MAXPHYADDR 46.
HOST_CPUID_80000008_EAX = 0x302E


@dataclass(frozen=True)
class KvmUserspaceMemoryRegion:
    """struct kvm_userspace_memory_region, as the ioctl copies it in."""

    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int


@dataclass(frozen=True)
class MemslotError:
    """Why KVM_SET_USER_MEMORY_REGION fails: -errno, the struct field at fault, and a sentence."""

    errno: int
    field: str
    why: str

    def message(self) -> str:
        return f"KVM_SET_USER_MEMORY_REGION: {self.why} ({_errno.errorcode.get(-self.errno, self.errno)})"


def kvm_get_shadow_phys_bits() -> int:
    """The host's physical-address width as KVM reads it: CPUID 0x80000008 EAX[7:0] (not the
    kernel's x86_phys_bits, which memory encryption may have reduced)."""
    return HOST_CPUID_80000008_EAX & 0xFF


def kvm_mmu_max_gfn(tdp_enabled: bool) -> int:
    """The highest GFN a memslot may reach: the host MAXPHYADDR with TDP (EPT), 52 bits with shadow paging."""
    bits = kvm_get_shadow_phys_bits() if tdp_enabled else 52
    return (1 << (bits - PAGE_SHIFT)) - 1


def check_memory_region_flags(mem: KvmUserspaceMemoryRegion) -> MemslotError | None:
    """Valid flags for a default VM type on x86: dirty logging and read-only (no guest_memfd)."""
    valid = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY
    if mem.flags & ~valid:
        return MemslotError(-_errno.EINVAL, "flags", f"flags {mem.flags:#x} has bits KVM does not know here")
    return None


def kvm_set_memory_region_check(slots: dict[int, tuple[int, int, int, int]], tdp_enabled: bool,
                                mem: KvmUserspaceMemoryRegion) -> tuple[MemslotError | None, str]:
    """kvm_vm_ioctl_set_memory_region and __kvm_set_memory_region up to kvm_set_memslot, then
    kvm_arch_prepare_memory_region's GFN limit: (the error, or None and the change:
    "create" | "delete" | "move" | "flags" | "none").  `slots`: id -> (gpa, size, userspace_addr, flags).
    Simplified: KVM_MEM_LOG_DIRTY_PAGES is accepted and not modelled (no dirty log)."""
    def einval(field: str, why: str) -> tuple[MemslotError, str]:
        return MemslotError(-_errno.EINVAL, field, why), ""

    if mem.flags & ~KVM_SET_USER_MEMORY_REGION_V1_FLAGS:     # kvm_vm_ioctl, the v1 ioctl's flags
        return einval("flags", f"flags {mem.flags:#x} are not KVM_MEM_LOG_DIRTY_PAGES|KVM_MEM_READONLY")
    if mem.slot & 0xFFFF >= KVM_USER_MEM_SLOTS:              # kvm_vm_ioctl_set_memory_region
        return einval("slot", f"slot id {mem.slot & 0xFFFF} is not below KVM_USER_MEM_SLOTS ({KVM_USER_MEM_SLOTS})")
    if (err := check_memory_region_flags(mem)) is not None:
        return err, ""
    as_id, slot_id = mem.slot >> 16, mem.slot & 0xFFFF
    if mem.memory_size & ((1 << PAGE_SHIFT) - 1):
        return einval("size", f"memory_size {mem.memory_size:#x} is not a multiple of the page size")
    if mem.guest_phys_addr & ((1 << PAGE_SHIFT) - 1):
        return einval("gpa", f"guest_phys_addr {mem.guest_phys_addr:#x} is not page aligned")
    if mem.userspace_addr & ((1 << PAGE_SHIFT) - 1) or mem.userspace_addr + mem.memory_size > TASK_SIZE_MAX:
        return einval("userspace_addr", f"userspace_addr {mem.userspace_addr:#x} is not a page-aligned user "
                      f"address range of {mem.memory_size:#x} bytes")
    if as_id >= KVM_MAX_NR_ADDRESS_SPACES or slot_id >= KVM_MEM_SLOTS_NUM:
        return einval("slot", f"slot {mem.slot:#x} names address space {as_id} (there is "
                      f"{KVM_MAX_NR_ADDRESS_SPACES})")
    if mem.guest_phys_addr + mem.memory_size >= 1 << 64:
        return einval("gpa", f"guest_phys_addr {mem.guest_phys_addr:#x} + memory_size {mem.memory_size:#x} "
                      "wraps around 2^64")
    if mem.memory_size >> PAGE_SHIFT > KVM_MEM_MAX_NR_PAGES:
        return einval("size", f"memory_size {mem.memory_size:#x} is more than KVM_MEM_MAX_NR_PAGES "
                      f"({KVM_MEM_MAX_NR_PAGES:#x}) pages")
    old = slots.get(mem.slot)
    if not mem.memory_size:
        if old is None:
            return einval("size", f"memory_size 0 deletes a slot, and slot {mem.slot} does not exist")
        return None, "delete"
    base_gfn, npages = mem.guest_phys_addr >> PAGE_SHIFT, mem.memory_size >> PAGE_SHIFT
    if old is None:
        change = "create"
    else:
        ogpa, osize, oaddr, oflags = old
        if mem.userspace_addr != oaddr or mem.memory_size != osize or (mem.flags ^ oflags) & KVM_MEM_READONLY:
            return einval("slot", f"slot {mem.slot} exists: only its gpa or KVM_MEM_LOG_DIRTY_PAGES may change")
        change = "move" if mem.guest_phys_addr != ogpa else "flags" if mem.flags != oflags else "none"
        if change == "none":
            return None, change
    if change in ("create", "move"):
        for sid, (g, sz, _a, _f) in slots.items():                 # kvm_check_memslot_overlap
            if sid != mem.slot and sid >> 16 == as_id and base_gfn < (g + sz) >> PAGE_SHIFT \
                    and g >> PAGE_SHIFT < base_gfn + npages:
                return MemslotError(-_errno.EEXIST, "gpa", f"{mem.guest_phys_addr:#x}+{mem.memory_size:#x} overlaps "
                                    f"slot {sid} at {g:#x}+{sz:#x}"), ""
        if base_gfn + npages - 1 > kvm_mmu_max_gfn(tdp_enabled):       # kvm_arch_prepare_memory_region
            bits = kvm_get_shadow_phys_bits() if tdp_enabled else 52
            return einval("gpa", f"{mem.guest_phys_addr:#x}+{mem.memory_size:#x} ends beyond the {bits}-bit "
                          "guest-physical space (kvm_mmu_max_gfn: host MAXPHYADDR)"
                          if tdp_enabled else f"ends beyond {bits} bits (kvm_mmu_max_gfn)")
    return None, change
