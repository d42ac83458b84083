"""Model of dirty logging (virt/kvm/kvm_main.c, arch/x86/kvm/x86.c, mmu with PML): a memslot with
KVM_MEM_LOG_DIRTY_PAGES gets a dirty bitmap; the CPU logs the pages the guest writes in the PML
buffer (hw/pml.py) and KVM moves them to the bitmap at every exit (vmx_flush_pml_buffer); writes
KVM itself makes to guest memory (the emulator) mark pages directly; KVM_GET_DIRTY_LOG hands the
bitmap to userspace, clears it, and clears the reported pages' EPT dirty flags so their next write
logs again.  Simplified: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 / KVM_CLEAR_DIRTY_LOG and the dirty ring
are not modelled (GET_DIRTY_LOG always re-protects what it reports).
"""

from __future__ import annotations

from kvmsim.kvm.vcpu import Kvm, KvmVcpu
from kvmsim.probe import PROBES, tracepoint

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0


def kvm_dirty_bitmap_bytes(npages: int) -> int:
    """One bit a page, rounded up to whole 64-bit words (what userspace's buffer must hold)."""
    return (npages + 63) // 64 * 8


def _slot_ranges(kvm: Kvm) -> list[tuple[int, int]]:
    return [(kvm.memslots[s][0], kvm.memslots[s][1]) for s in kvm.dirty_log_slots if s in kvm.memslots]


def kvm_commit_dirty_logging(kvm: Kvm, slot: int, flags: int) -> None:
    """kvm_arch_commit_memory_region → kvm_mmu_update_cpu_dirty_logging / kvm_mmu_slot_leaf_clear_dirty:
    logging starts with a clean bitmap and clean EPT dirty flags over the slot, and PML follows
    the number of logging slots on every vCPU (KVM_REQ_UPDATE_CPU_DIRTY_LOGGING, applied at once here)."""
    from kvmsim.kvm import vmx_controls      # the vendor side of the request
    from kvmsim.hw.vmcs import SECONDARY_EXEC_ENABLE_PML
    logging = bool(flags & KVM_MEM_LOG_DIRTY_PAGES) and slot in kvm.memslots
    if logging and slot not in kvm.dirty_log_slots:
        gpa, size, _ = kvm.memslots[slot]
        kvm.dirty_log_slots[slot] = bytearray(kvm_dirty_bitmap_bytes(size >> 12))
        for vcpu in kvm.vcpus:
            vcpu.hw.ept_clear_dirty(range(gpa >> 12, (gpa + size) >> 12))
    elif not logging:
        kvm.dirty_log_slots.pop(slot, None)
    for vcpu in kvm.vcpus:
        vcpu.hw.pml_watch(_slot_ranges(kvm))
        v = vcpu.hw.vmcs
        if vmx_controls.vmx_secondary_exec_control(vcpu) & SECONDARY_EXEC_ENABLE_PML:
            v.secondary_vm_exec_control |= SECONDARY_EXEC_ENABLE_PML
        else:
            v.secondary_vm_exec_control &= ~SECONDARY_EXEC_ENABLE_PML


def mark_page_dirty(kvm: Kvm, gfn: int) -> None:
    """mark_page_dirty_in_slot: the page's bit in its logging slot's bitmap (none: nothing)."""
    for slot, bitmap in kvm.dirty_log_slots.items():
        gpa, size, _ = kvm.memslots[slot]
        rel = gfn - (gpa >> 12)
        if 0 <= rel < size >> 12:
            bitmap[rel >> 3] |= 1 << (rel & 7)
            if PROBES.enabled:
                tracepoint("kvm_dirty_page", slot=slot, gfn=gfn)
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
    gpa = kvm.memslots[slot][0]
    dirty = [(gpa >> 12) + i for i in range(len(bitmap) * 8) if bitmap[i >> 3] >> (i & 7) & 1]
    bitmap[:] = bytes(len(bitmap))
    for vcpu in kvm.vcpus:
        vcpu.hw.ept_clear_dirty(dirty)
    return out
