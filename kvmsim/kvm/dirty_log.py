"""Model of dirty logging (virt/kvm/kvm_main.c, arch/x86/kvm/x86.c, mmu with PML): a memslot with
KVM_MEM_LOG_DIRTY_PAGES gets a dirty bitmap; the CPU logs the pages the guest writes in the PML
buffer (hw/pml.py) and KVM moves them to the bitmap at every exit (vmx_flush_pml_buffer); writes
KVM itself makes to guest memory (the emulator) mark pages directly; KVM_GET_DIRTY_LOG hands the
bitmap to userspace, clears it, and clears the reported pages' EPT dirty flags so their next write
logs again.  With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, GET_DIRTY_LOG only copies the bitmap and
KVM_CLEAR_DIRTY_LOG clears and re-protects the pages userspace names (with INITIALLY_SET logging
starts with every bit set and nothing protected).  The dirty ring is not modelled.
"""

from __future__ import annotations

from kvmsim.kvm.kvm_x86_ops import kvm_x86_ops
from kvmsim.kvm.vcpu import Kvm, KvmVcpu

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, KVM_DIRTY_LOG_INITIALLY_SET = 1 << 0, 1 << 1


def kvm_dirty_bitmap_bytes(npages: int) -> int:
    """One bit a page, rounded up to whole 64-bit words (what userspace's buffer must hold)."""
    return (npages + 63) // 64 * 8


def _slot_ranges(kvm: Kvm) -> list[tuple[int, int]]:
    return [(kvm.memslots[s][0], kvm.memslots[s][1]) for s in kvm.dirty_log_slots if s in kvm.memslots]


def kvm_commit_dirty_logging(kvm: Kvm, slot: int, flags: int) -> None:
    """kvm_arch_commit_memory_region → kvm_mmu_update_cpu_dirty_logging / kvm_mmu_slot_leaf_clear_dirty:
    logging starts with a clean bitmap and clean EPT dirty flags over the slot, and PML follows
    the number of logging slots on every vCPU (KVM_REQ_UPDATE_CPU_DIRTY_LOGGING, applied at once here)."""
    logging = bool(flags & KVM_MEM_LOG_DIRTY_PAGES) and slot in kvm.memslots
    if logging and slot not in kvm.dirty_log_slots:
        gpa, size, _ = kvm.memslots[slot]
        npages = size >> 12
        bitmap = kvm.dirty_log_slots[slot] = bytearray(kvm_dirty_bitmap_bytes(npages))
        if kvm.manual_dirty_log_protect & KVM_DIRTY_LOG_INITIALLY_SET:
            for i in range(npages):                 # every page dirty, none protected yet
                bitmap[i >> 3] |= 1 << (i & 7)
        else:
            for vcpu in kvm.vcpus:
                vcpu.hw.ept_clear_dirty(range(gpa >> 12, (gpa + size) >> 12))
    elif not logging:
        kvm.dirty_log_slots.pop(slot, None)
    for vcpu in kvm.vcpus:
        vcpu.hw.pml_watch(_slot_ranges(kvm))
        kvm_x86_ops.update_cpu_dirty_logging(vcpu)


def mark_page_dirty(kvm: Kvm, gfn: int) -> None:
    """mark_page_dirty_in_slot: the page's bit in its logging slot's bitmap (none: nothing)."""
    for slot, bitmap in kvm.dirty_log_slots.items():
        gpa, size, _ = kvm.memslots[slot]
        rel = gfn - (gpa >> 12)
        if 0 <= rel < size >> 12:
            bitmap[rel >> 3] |= 1 << (rel & 7)
            return


def kvm_vcpu_mark_page_dirty(vcpu: KvmVcpu, gfn: int) -> None:
    mark_page_dirty(vcpu.kvm, gfn)


def kvm_vm_ioctl_get_dirty_log(kvm: Kvm, slot: int) -> bytes | None:
    """KVM_GET_DIRTY_LOG: the slot's bitmap (None: -ENOENT, the slot does not log), cleared, and
    the reported pages write-protected again (their EPT dirty flags cleared: kvm_arch_mmu_enable_log_dirty_pt_masked).
    kvm_arch_sync_dirty_log has every vCPU flush its PML buffer first (here they are out of the guest,
    and their buffers were flushed at their last exit)."""
    bitmap = kvm.dirty_log_slots.get(slot)
    if bitmap is None:
        return None
    out = bytes(bitmap)
    if kvm.manual_dirty_log_protect:                # userspace clears (and re-protects) itself
        return out
    gpa = kvm.memslots[slot][0]
    dirty = [(gpa >> 12) + i for i in range(len(bitmap) * 8) if bitmap[i >> 3] >> (i & 7) & 1]
    bitmap[:] = bytes(len(bitmap))
    for vcpu in kvm.vcpus:
        vcpu.hw.ept_clear_dirty(dirty)
    return out


def kvm_vm_ioctl_clear_dirty_log(kvm: Kvm, slot: int, first_page: int, num_pages: int, mask: bytes) -> int:
    """KVM_CLEAR_DIRTY_LOG: the pages first_page.. whose bit is set in `mask` leave the bitmap and are
    write-protected again (EPT dirty flags cleared); 0, or -errno as kvm_clear_dirty_log_protect:
    EINVAL without manual protect, for a first_page or num_pages not a multiple of 64 (unless it
    ends the slot) or a range past the slot; ENOENT for a slot that does not log."""
    if not kvm.manual_dirty_log_protect:
        return -22
    bitmap = kvm.dirty_log_slots.get(slot)
    if bitmap is None:
        return -2
    gpa, size, _ = kvm.memslots[slot]
    npages = size >> 12
    if first_page & 63 or (num_pages & 63 and first_page + num_pages != npages) or first_page + num_pages > npages:
        return -22
    cleared = []
    for i in range(num_pages):
        if i >> 3 < len(mask) and mask[i >> 3] >> (i & 7) & 1:
            page = first_page + i
            if bitmap[page >> 3] >> (page & 7) & 1:
                bitmap[page >> 3] &= ~(1 << (page & 7))
                cleared.append((gpa >> 12) + page)
    for vcpu in kvm.vcpus:
        vcpu.hw.ept_clear_dirty(cleared)
    return 0
