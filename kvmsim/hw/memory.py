"""Guest memory as the CPU reaches it: memslots, the guest page walk, linear accesses."""

from __future__ import annotations

import ctypes

from unicorn import UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ, UcError
from unicorn.unicorn_const import UC_CTL_TLB_FLUSH


from kvmsim.hw import event, paging
from kvmsim.hw.registers import CpuState   # the compiled path's struct view of self (registers.pxd)
from kvmsim.hw.vmcs import Vector


_WALK_ADDR52 = 0x000F_FFFF_FFFF_F000
_PT_TABLES_MAX = 4096   # paging structures whose place in host memory the walk remembers
_WALK_MEMO_MAX = 4096   # translations the walk remembers with the entries they were read from


class GuestMemory:
    """Mixin of SiliconVcpu: RAM behind memslots and the guest's own paging."""

    def map_memslot(self, slot: int, gpa: int, size: int, host_addr: int, readonly: bool = False) -> None:
        """EPT entries for a memslot: read/write/execute, or read/execute for KVM_MEM_READONLY."""
        self.memslots[slot] = (gpa, size, host_addr)
        if readonly:
            self.readonly_slots.add(slot)
        self._memslots_changed()
        if self.uc is not None:
            self.uc.mem_map_ptr(gpa, size, self._slot_prot(slot), host_addr)
            self.code_written(gpa, size)

    def unmap_memslot(self, slot: int) -> None:
        """The memslot's EPT entries go (KVM_MR_DELETE, and the first half of KVM_MR_MOVE)."""
        gpa, size, _ = self.memslots.pop(slot)
        self.readonly_slots.discard(slot)
        self._memslots_changed()
        if self.uc is not None:
            self.uc.mem_unmap(gpa, size)
            self.code_written(gpa, size)

    def _slot_prot(self, slot: int) -> int:
        return UC_PROT_READ | UC_PROT_EXEC if slot in self.readonly_slots else UC_PROT_ALL

    def _memslots_changed(self) -> None:
        """The lookup's views of the memslots follow a map or unmap."""
        self._slot_list = list(self.memslots.values())   # what memslot_at (and the page walk) scans
        self._readonly_list = [self.memslots[n] for n in self.readonly_slots]
        self._last_slot = None

    def memslot_at(self, gpa: int) -> tuple[int, int, int] | None:
        """The memslot (gpa, size, host address) holding `gpa`, or None: KVM's kvm_vcpu_gfn_to_memslot,
        the one memslot lookup; it tries the slot it found last first, as the kernel's last_used_slot."""
        cpu: CpuState = self   # (registers.pxd: struct fields on the compiled path)
        slot = cpu._last_slot
        if slot is not None and slot[0] <= gpa < slot[0] + slot[1]:
            return slot
        for slot in cpu._slot_list:
            if slot[0] <= gpa < slot[0] + slot[1]:
                cpu._last_slot = slot
                return slot
        return None

    def gpa_is_ram(self, gpa: int) -> bool:
        return self.memslot_at(gpa) is not None

    def gpa_is_readonly(self, gpa: int) -> bool:
        """In a KVM_MEM_READONLY memslot: reads are RAM, writes fault to KVM."""
        return bool(self._readonly_list) and self.memslot_at(gpa) in self._readonly_list

    def read_phys(self, gpa: int, size: int) -> int:
        """Guest-physical RAM straight from the memslot's host memory (unicorn's mem_read costs ~4 us)."""
        host = self._host(gpa, size)
        if host:
            return int.from_bytes(ctypes.string_at(host, size), "little")
        return int.from_bytes(self.uc.mem_read(gpa, size), "little")

    def _host(self, gpa: int, size: int) -> int:
        """Host address of guest RAM [gpa, gpa + size), or 0 if it is not all in one memslot."""
        slot = self.memslot_at(gpa)
        if slot is not None and gpa + size <= slot[0] + slot[1]:
            return slot[2] + gpa - slot[0]
        return 0

    def walk(self, linear: int, write: bool = False, user: bool = False, fetch: bool = False) -> int:
        """The guest page walk, done in software on every call as the CPU (and KVM's
        paging_tmpl.h walk_addr_generic) does: raises paging.PageFault.  The common case (4-level paging, every
        entry present and permitting the access, tables in RAM memslots) reads the entries straight
        from the memslots' host memory; anything else is left to paging.walk, which decides."""
        cpu: CpuState = self   # (registers.pxd: struct fields on the compiled path)
        regs = cpu._rc                # registers read since the guest last ran (registers.py)
        cr0, efer = regs.get(0), cpu._efer
        if cr0 is None:
            cr0 = self.cr(0)
        if efer is None:
            efer = self.efer()
        if cr0 & paging.X86_CR0_PG and efer & paging.EFER_LMA:
            tables = cpu._pt_tables
            memo = cpu._walk_memo
            if cpu._pt_tables_for is not cpu._slot_list:   # the memslots changed: forget the views
                tables.clear()
                memo.clear()
                cpu._pt_tables_for = cpu._slot_list
            cr3 = regs.get(3)
            if cr3 is None:
                cr3 = self.cr(3)
            # Simulator cache, not kernel behaviour: the entries this walk read last time, re-read and
            # compared; all unchanged (same CR0/CR3/EFER and access) gives the same translation.
            key = (linear >> 12, write, user, fetch, cr0, cr3, efer)
            hit = memo.get(key)
            if hit is not None:
                for view, index, value in hit[0]:
                    if view[index] != value:
                        break
                else:
                    return hit[1] | (linear & 0xFFF)
            read = []
            table = cr3 & _WALK_ADDR52
            allowed_w = allowed_u = True
            nx = False
            shift = 39
            while True:
                found = tables.get(table)
                if found is None:
                    found = self._pt_table(table)
                if not found:
                    break                              # a table outside RAM: paging.walk reads it
                view, first = found
                index = first + ((linear >> shift) & 0x1FF)
                entry = view[index]
                read.append((view, index, entry))
                if not entry & 1:
                    break                              # not present: paging.walk raises the #PF
                allowed_w = allowed_w and entry & 2
                allowed_u = allowed_u and entry & 4
                nx = nx or entry >> 63
                if shift == 12 or entry & 0x80:
                    if (write and not allowed_w and (user or cr0 & paging.X86_CR0_WP)) or (user and not allowed_u) \
                            or (fetch and nx and efer & paging.EFER_NX):
                        break                          # protection fault: paging.walk raises it
                    size = 1 << shift
                    gpa = entry & _WALK_ADDR52 & ~(size - 1) | (linear & (size - 1))
                    if len(memo) >= _WALK_MEMO_MAX:
                        memo.clear()
                    memo[key] = (tuple(read), gpa & ~0xFFF)
                    return gpa
                table = entry & _WALK_ADDR52
                shift -= 9
        return paging.walk(self.read_phys, cr0, self.cr(3), self.cr(4), efer, linear, write=write, user=user, fetch=fetch)

    def _pt_table(self, table: int) -> tuple[memoryview, int] | bool:
        """The 4 KiB paging structure at GPA `table` as (64-bit view of its memslot's host memory,
        index of its first entry), or False outside RAM; remembered until the memslots change.
        The entries themselves are read afresh on every walk."""
        slot = self.memslot_at(table)
        found: tuple[memoryview, int] | bool = False
        if slot is not None and table + 0x1000 <= slot[0] + slot[1]:
            g, sz, host = slot
            view = memoryview((ctypes.c_char * sz).from_address(host)).cast("B").cast("Q")
            found = (view, (table - g) >> 3)
        if len(self._pt_tables) >= _PT_TABLES_MAX:
            self._pt_tables.clear()
        self._pt_tables[table] = found
        return found

    def translate(self, linear: int, write: bool = False, fetch: bool = False, user: bool | None = None) -> int:
        """user=None: a user access iff CPL 3; False for the CPU's implicit supervisor accesses
        (GDT/IDT/TSS reads, the ring-0 stack of an event delivery)."""
        return self.walk(linear, write, self.cpl() == 3 if user is None else user, fetch)

    def read_linear_bytes(self, linear: int, size: int, user: bool | None = None) -> bytes:
        out = bytearray()
        while size:
            chunk = min(size, 0x1000 - (linear & 0xFFF))
            gpa = self.translate(linear, user=user)
            out += (ctypes.string_at(self._host(gpa, chunk), chunk) if self._host(gpa, chunk)
                    else self.uc.mem_read(gpa, chunk))
            linear, size = linear + chunk, size - chunk
        return bytes(out)

    def read_linear(self, addr: int, size: int, user: bool | None = None) -> int:
        try:
            return int.from_bytes(self.read_linear_bytes(addr, size, user), "little")
        except paging.PageFault as pf:
            raise event.DeliveryFault(Vector.PF, pf.error_code, pf.address) from None
        except UcError:
            raise event.DeliveryFault(Vector.GP, 0) from None

    def write_linear(self, addr: int, size: int, value: int, user: bool | None = None) -> None:
        data = value.to_bytes(size, "little")
        try:
            while data:
                chunk = min(len(data), 0x1000 - (addr & 0xFFF))
                gpa = self.translate(addr, write=True, user=user)
                self.uc.mem_write(gpa, data[:chunk])
                self.code_written(gpa, chunk)
                addr, data = addr + chunk, data[chunk:]
        except paging.PageFault as pf:
            raise event.DeliveryFault(Vector.PF, pf.error_code, pf.address) from None
        except UcError:
            raise event.DeliveryFault(Vector.GP, 0) from None

    def flush_tlb(self) -> None:
        """KVM flushed the guest's TLB entries (INVLPG/INVPCID it completed): unicorn's TLB goes too,
        and the scanned code pages are checked against what they map now."""
        if self.uc is not None:
            self.uc._Uc__ctl_w(UC_CTL_TLB_FLUSH)
            self._revalidate_maps()
