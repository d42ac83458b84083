"""The CPU under shadow paging (no EPT): what KVM's shadow page tables make it do.

Without EPT the hardware walks KVM's shadow tables, not the guest's, and KVM intercepts #PF.  The
silicon keeps the guest's tables as its translation (unicorn walks them natively) and adds the three
places where the shadow tables make the CPU behave differently:
- an access whose guest-physical page has no memslot: the SPTE is not present (or, once KVM cached
  it, an MMIO SPTE with reserved bits): a #PF VM exit, exit qualification = the linear address;
- a write to a guest page-table page KVM write-protected (`spt_write_protected`): a #PF exit with
  P|W, the write not done;
- a #PF the guest's own tables raise: a #PF VM exit (KVM intercepts it), CR2 left unchanged.
Simplified: SPTEs for RAM are not modelled at the silicon (no hidden first-touch #PF exits), as the
EPT model maps RAM memslots up front; the guest's accessed/dirty bits are set by unicorn's walk
(KVM's shadow walker sets them at those hidden faults).
"""

from __future__ import annotations

import ctypes
import functools
import struct

from unicorn import (UC_ARCH_X86, UC_MEM_FETCH_UNMAPPED, UC_MEM_WRITE_PROT, UC_MEM_WRITE_UNMAPPED, UC_MODE_64,
                     UC_PROT_EXEC, UC_PROT_READ, Uc)

from kvmsim.errors import KvmSimBug

from kvmsim.hw import paging
from kvmsim.hw.vmcs import ExitReason, IntrType, Vector, intr_info

_PF_INFO = intr_info(Vector.PF, IntrType.HARD_EXCEPTION, True)


@functools.cache
def _memory_region_layout() -> tuple[int, int, int]:
    """(offset in uc_struct of `mapped_blocks`, offset of `addr` and of `readonly` in a MemoryRegion),
    found once per process by mapping three regions and write-protecting one.  unicorn's mem_protect
    makes a region read-only for the guest's stores (its perms) and for QEMU's own physical stores
    (mr->readonly): clearing the second lets the page walker set accessed/dirty bits in a table the
    silicon write-protects for KVM, as KVM's shadow walker sets them, while guest stores still trap."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    spans = ((0x10000, 0x1000), (0x30000, 0x2000), (0x50000, 0x3000))
    for a, s in spans:
        uc.mem_map(a, s)
    raw = ctypes.string_at(uc._uch.value, 1 << 16)
    for off in range(0, len(raw) - 12, 8):
        ptr, cnt = struct.unpack_from("<QI", raw, off)
        if cnt != len(spans) or ptr < 0x10000:
            continue
        mrs = struct.unpack("<3Q", ctypes.string_at(ptr, 24))
        if any(m < 0x10000 for m in mrs):
            continue
        bodies = [ctypes.string_at(m, 256) for m in mrs]
        addr_at = [i for i in range(0, 256, 8) if all(struct.unpack_from("<Q", b, i)[0] == a
                                                    for b, (a, _) in zip(bodies, spans))]
        if not addr_at:
            continue
        before = ctypes.string_at(mrs[1], 8)
        uc.mem_protect(0x30000, 0x2000, UC_PROT_READ)
        after = ctypes.string_at(mrs[1], 8)
        flips = [i for i in range(8) if before[i] == 0 and after[i] == 1]
        if len(flips) == 1:
            return off, addr_at[0], flips[0]
        break
    raise KvmSimBug("cannot find unicorn's memory-region table (mapped_blocks, MemoryRegion.readonly)")


class ShadowPaging:
    """Mixin of SiliconVcpu: the shadow-paging view of memory KVM sets up when EPT is off."""

    def _spt_init(self) -> None:
        self.spt_mmio: set[int] = set()              # linear page numbers with an MMIO SPTE (current root)
        self.spt_write_protected: set[int] = set()   # gfns whose SPTEs KVM made read-only
        self._cr2_at_entry = 0                       # CR2 before the guest ran (a #PF exit leaves it)

    # ------------------------------------------------------------ what KVM programs
    def write_protect_gfn(self, gfn: int, on: bool) -> None:
        """KVM made every SPTE of `gfn` read-only (rmap_write_protect), or writable again."""
        if on == (gfn in self.spt_write_protected):
            return
        (self.spt_write_protected.add if on else self.spt_write_protected.discard)(gfn)
        if self.uc is None:
            return
        for slot, (gpa, size, _) in self.memslots.items():
            if gpa <= gfn << 12 < gpa + size:
                if not on:
                    self._set_region_readonly(gfn << 12, True)   # so mem_protect commits the change
                self.uc.mem_protect(gfn << 12, 0x1000, UC_PROT_READ | UC_PROT_EXEC if on else self._slot_prot(slot))
                if on and slot not in self.readonly_slots:
                    self._set_region_readonly(gfn << 12, False)  # the page walker's A/D stores land
                return

    def spt_host_wrote(self, first: int, last: int) -> None:
        """KVM or the CPU's event delivery wrote frames [first, last] (uc_mem_write marks a protected
        region read-only again after a host write): keep the page walker's A/D stores landing."""
        for gfn in range(first, last + 1):
            if gfn in self.spt_write_protected and self.uc is not None:
                self._set_region_readonly(gfn << 12, False)

    def _set_region_readonly(self, gpa: int, readonly: bool) -> None:
        """Poke mr->readonly of the unicorn region starting at `gpa` (see _memory_region_layout)."""
        blocks_at, addr_at, ro_at = _memory_region_layout()
        ptr, cnt = struct.unpack_from("<QI", ctypes.string_at(self.uc._uch.value + blocks_at, 12))
        for mr in struct.unpack(f"<{cnt}Q", ctypes.string_at(ptr, 8 * cnt)):
            if struct.unpack("<Q", ctypes.string_at(mr + addr_at, 8))[0] == gpa:
                ctypes.memset(mr + ro_at, int(readonly), 1)
                return

    # ------------------------------------------------------------ exits
    def _pf_exit(self, linear: int, error_code: int) -> bool:
        """#PF VM exit (exception bitmap bit 14): qualification = linear address, CR2 untouched."""
        return self._exit(ExitReason.EXCEPTION_NMI, linear, self._insn_len(), intr=_PF_INFO, err=error_code)

    def _guest_pf_exit(self, error_code: int) -> bool:
        """The guest's tables raised #PF and KVM intercepts it: unicorn already wrote CR2; put it back."""
        linear = self.cr(2)
        self.set_cr2(self._cr2_at_entry)
        return self._pf_exit(linear, error_code)

    def _shadow_pf_exit(self, access: int, gpa: int) -> bool:
        """No memslot at `gpa`, or a write to a write-protected or read-only page: the shadow entry
        refuses the access.  Error code as the CPU builds it from the SPTE."""
        fetch = access == UC_MEM_FETCH_UNMAPPED
        write = access in (UC_MEM_WRITE_UNMAPPED, UC_MEM_WRITE_PROT)
        linear = self._linear_of_access(gpa, write, fetch)
        err = paging.PFERR_WRITE_MASK if write else 0
        err |= paging.PFERR_USER_MASK if self.cpl() == 3 else 0
        err |= paging.PFERR_FETCH_MASK if fetch and self.efer() & paging.EFER_NX else 0
        if access == UC_MEM_WRITE_PROT:
            err |= paging.PFERR_PRESENT_MASK
        elif (linear >> 12) in self.spt_mmio:
            err |= paging.PFERR_PRESENT_MASK | paging.PFERR_RSVD_MASK   # KVM's MMIO SPTE: reserved bits set
        return self._pf_exit(linear, err)

    def _linear_of_access(self, gpa: int, write: bool, fetch: bool) -> int:
        """The linear address the CPU was accessing when it reached guest-physical `gpa`: RIP's page for a
        fetch, else the memory operand of the instruction at RIP that translates to it.  Simplified: an
        implicit operand (PUSH, a far pointer) is not decoded; the GPA stands in for it."""
        here = self.linear_rip()
        if fetch:
            return (here & ~0xFFF) | (gpa & 0xFFF) if (here & 0xFFF) <= (gpa & 0xFFF) else here
        try:
            code = self.read_linear_bytes(here, 15)
        except Exception:   # noqa: BLE001 - RIP not readable: no operand to decode
            return gpa
        for linear, _written, size in self.mem_operands(here, code):
            for probe in (linear, linear + size - 1):
                try:
                    if self.walk(probe, False, False, False) >> 12 == gpa >> 12:
                        return (probe & ~0xFFF) | (gpa & 0xFFF)
                except paging.PageFault:
                    continue
        return gpa
