"""The CPU's register file and descriptor caches as unicorn holds them, read the way KVM's
register cache reads the VMCS: lazily, cached until the guest runs again."""

from __future__ import annotations

import ctypes

from unicorn import x86_const as U

from kvmsim.hw import event, paging
from kvmsim.hw.ucraw import uc_reg_read, uc_reg_read_batch, uc_reg_write
from kvmsim.uapi import KvmDtable, KvmRegs, KvmSegment, KvmSregs


GPR_IDS = {
    "rax": U.UC_X86_REG_RAX, "rbx": U.UC_X86_REG_RBX, "rcx": U.UC_X86_REG_RCX, "rdx": U.UC_X86_REG_RDX,
    "rsi": U.UC_X86_REG_RSI, "rdi": U.UC_X86_REG_RDI, "rsp": U.UC_X86_REG_RSP, "rbp": U.UC_X86_REG_RBP,
    "r8": U.UC_X86_REG_R8, "r9": U.UC_X86_REG_R9, "r10": U.UC_X86_REG_R10, "r11": U.UC_X86_REG_R11,
    "r12": U.UC_X86_REG_R12, "r13": U.UC_X86_REG_R13, "r14": U.UC_X86_REG_R14, "r15": U.UC_X86_REG_R15,
    "rip": U.UC_X86_REG_RIP, "rflags": U.UC_X86_REG_RFLAGS,
}
# Unicorn in 16/32-bit mode only takes the 32-bit register ids; R8-R15 do not exist there.
GPR_IDS_32 = {**{n: getattr(U, "UC_X86_REG_E" + n[1:].upper()) for n in
                 ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "rip")},
              "rflags": U.UC_X86_REG_EFLAGS}
SEG_IDS = {"cs": U.UC_X86_REG_CS, "ds": U.UC_X86_REG_DS, "es": U.UC_X86_REG_ES, "fs": U.UC_X86_REG_FS,
           "gs": U.UC_X86_REG_GS, "ss": U.UC_X86_REG_SS, "tr": U.UC_X86_REG_TR, "ldt": U.UC_X86_REG_LDTR}
REG_IDS = {**GPR_IDS, **SEG_IDS}
REG_IDS_32 = {**GPR_IDS_32, **SEG_IDS}
MSR_EFER = 0xC0000080
_SNAP_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")   # read with RIP & co. after every exit
_CR_IDS = {0: U.UC_X86_REG_CR0, 2: U.UC_X86_REG_CR2, 3: U.UC_X86_REG_CR3, 4: U.UC_X86_REG_CR4, 8: U.UC_X86_REG_CR8}


class CpuState:
    """Mixin of SiliconVcpu: GPRs, control registers, segments, CPU mode."""

    def get_regs(self) -> KvmRegs:
        if self.uc is None:
            return self._pending_regs or KvmRegs(rflags=2)
        regs = KvmRegs()
        for name in GPR_IDS:
            setattr(regs, name, self.reg(name))
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        if self.uc is None:
            self._pending_regs = regs
        else:
            self._apply_regs(regs)

    def _apply_regs(self, regs: KvmRegs) -> None:
        self.flush_regs()
        self._rc.clear()
        for name in GPR_IDS:
            self.set_reg(name, getattr(regs, name))

    def get_sregs(self) -> KvmSregs:
        if self.uc is None:
            return self._pending_sregs or KvmSregs()
        s = KvmSregs()
        for name in KvmSregs.SEGMENTS:
            setattr(s, name, self.segment(name))
        gb, gl = self.uc.reg_read(U.UC_X86_REG_GDTR)[1:3]
        ib, il = self.uc.reg_read(U.UC_X86_REG_IDTR)[1:3]
        s.gdt, s.idt = KvmDtable(base=gb, limit=gl), KvmDtable(base=ib, limit=il)
        s.cr0, s.cr2 = self.uc.reg_read(U.UC_X86_REG_CR0), self.uc.reg_read(U.UC_X86_REG_CR2)
        s.cr3, s.cr4 = self.uc.reg_read(U.UC_X86_REG_CR3), self.uc.reg_read(U.UC_X86_REG_CR4)
        # CR8 and the FS/GS base registers exist only in unicorn's 64-bit CPU (TPR is 0 without a LAPIC).
        s.cr8 = self.uc.reg_read(U.UC_X86_REG_CR8) if self._reg_ids is REG_IDS else 0
        s.efer = self.uc.msr_read(MSR_EFER)
        s.apic_base = 0xFEE00900
        return s

    def set_sregs(self, sregs: KvmSregs) -> None:
        if self.uc is None:
            self._pending_sregs = sregs
            for name in KvmSregs.SEGMENTS:
                self.seg_cache[name] = _copy_seg(getattr(sregs, name))
        else:
            self._apply_sregs(sregs)

    def _apply_sregs(self, s: KvmSregs) -> None:
        uc = self.uc
        self.flush_regs()
        self._rc.clear()
        self._mode = self._efer = None
        uc.reg_write(U.UC_X86_REG_GDTR, (0, s.gdt.base, s.gdt.limit, 0))
        uc.reg_write(U.UC_X86_REG_IDTR, (0, s.idt.base, s.idt.limit, 0))
        uc.reg_write(U.UC_X86_REG_CR4, s.cr4)
        uc.msr_write(MSR_EFER, s.efer)
        uc.reg_write(U.UC_X86_REG_CR3, s.cr3)
        uc.reg_write(U.UC_X86_REG_CR0, s.cr0)
        uc.reg_write(U.UC_X86_REG_CR2, s.cr2)
        for name in ("ss", "ds", "es", "fs", "gs", "cs"):
            seg = getattr(s, name)
            uc.reg_write(SEG_IDS[name], seg.selector)
            self.seg_cache[name] = _copy_seg(seg)
        for name in ("tr", "ldt"):
            self.seg_cache[name] = _copy_seg(getattr(s, name))
        tr = s.tr
        if not tr.unusable:   # the CPU's TR, so that a guest LTR replaces it (segment("tr") reads it back)
            uc.reg_write(U.UC_X86_REG_TR, (tr.selector, tr.base, tr.limit,
                                           tr.type << 8 | tr.s << 12 | tr.dpl << 13 | tr.present << 15))
        if self._reg_ids is REG_IDS:
            uc.reg_write(U.UC_X86_REG_FS_BASE, s.fs.base)
            uc.reg_write(U.UC_X86_REG_GS_BASE, s.gs.base)

    def reg(self, name: str) -> int:
        """A GPR/RIP/RFLAGS/selector.  Cached until the guest runs again (like vcpu->arch.regs_avail);
        read straight through uc_reg_read, since unicorn's Python wrapper costs ~6 us a call."""
        v = self._rc.get(name)
        if v is not None:
            return v
        rid = self._reg_ids.get(name)
        if rid is None:
            return self._hi.get(name, 0)   # R8-R15 while unicorn runs a 16/32-bit CPU
        buf = self._regbuf
        buf.value = 0
        uc_reg_read(self._uch, rid, ctypes.byref(buf))
        v = buf.value
        if self._hi and name in self._hi:
            v |= self._hi[name] << 32      # outside 64-bit mode the CPU keeps the upper halves
        self._rc[name] = v
        return v

    def set_reg(self, name: str, value: int) -> None:
        value &= 0xFFFF_FFFF_FFFF_FFFF
        rid = self._reg_ids.get(name)
        if rid is None:
            if name in GPR_IDS:
                self._hi[name] = value      # R8-R15 kept here while unicorn runs a 16/32-bit CPU
                self._rc.pop(name, None)
            return
        if name in SEG_IDS:
            uc_reg_write(self._uch, rid, ctypes.byref(ctypes.c_uint64(value & 0xFFFF)))
            self._rc.pop(name, None)   # unicorn reloads the hidden part; reread the selector
            self._mode = None
            return
        mask = 0xFFFF_FFFF if self._reg_ids is REG_IDS_32 else 0xFFFF_FFFF_FFFF_FFFF
        if mask != 0xFFFF_FFFF_FFFF_FFFF and (value >> 32 or name in self._hi):
            self._hi[name] = value >> 32
        # Like KVM's regs_dirty: the value reaches the CPU at the next VM entry (flush_regs).
        self._rc[name] = value
        self._dirty[name] = (rid, value & mask)
        if name == "rflags":
            self._mode = None

    def flush_regs(self) -> None:
        """Write the registers changed since the guest last ran into unicorn (before it runs)."""
        uch, buf = self._uch, self._wbuf
        for rid, value in self._dirty.values():
            buf.value = value
            uc_reg_write(uch, rid, ctypes.byref(buf))
        self._dirty.clear()

    def set_cr(self, n: int, value: int) -> None:
        self.uc.reg_write(_CR_IDS[n], value)
        self._rc.pop(n, None)
        self._mode = self._efer = None

    def load_cs(self, selector: int) -> None:
        self.uc.reg_write(U.UC_X86_REG_CS, selector)
        self._rc.pop("cs", None)
        self._mode = None

    def enter_ring0(self, cs: int, ss: int) -> None:
        """CS and SS of an event delivered to ring 0 from an outer ring.  QEMU takes the CPL from
        SS.DPL and refuses a ring-0 SS at CPL 3 through uc_reg_write, so SS is first loaded the
        real-mode way (CR0.PE clear for the moment: DPL 0), then CS and SS properly."""
        uc = self.uc
        cr0 = self.cr(0)
        uc.reg_write(U.UC_X86_REG_CR0, cr0 & ~paging.X86_CR0_PE)
        uc.reg_write(U.UC_X86_REG_SS, 0)
        uc.reg_write(U.UC_X86_REG_CR0, cr0)
        uc.reg_write(U.UC_X86_REG_CS, cs)
        uc.reg_write(U.UC_X86_REG_SS, ss)
        for name in ("cs", "ss"):
            self._rc.pop(name, None)
            self.seg_cache.pop(name, None)
        self._mode = None

    def set_cr2(self, value: int) -> None:
        self.uc.reg_write(U.UC_X86_REG_CR2, value)
        self._rc.pop(2, None)

    def cr(self, n: int) -> int:
        v = self._rc.get(n)          # cached with the GPRs until the guest runs again
        if v is not None:
            return v
        if n == 8 and self._reg_ids is not REG_IDS:
            return 0   # unicorn's 32-bit CPU has no CR8
        buf = self._regbuf
        buf.value = 0
        uc_reg_read(self._uch, _CR_IDS[n], ctypes.byref(buf))
        self._rc[n] = buf.value
        return buf.value

    def efer(self) -> int:
        if self._efer is None:
            self._efer = self.uc.msr_read(MSR_EFER)
        return self._efer

    def set_efer(self, value: int) -> None:
        """WRMSR(EFER) reaches the CPU (LMA follows LME and CR0.PG, as the CPU does)."""
        lma = self.efer() & paging.EFER_LMA
        self.uc.msr_write(MSR_EFER, (value & ~paging.EFER_LMA) | lma)
        self._efer = None
        self._mode = None

    def gdtr(self) -> tuple[int, int]:
        base, limit = self.uc.reg_read(U.UC_X86_REG_GDTR)[1:3]
        return base, limit

    def idtr(self) -> tuple[int, int]:
        base, limit = self.uc.reg_read(U.UC_X86_REG_IDTR)[1:3]
        return base, limit

    def segment(self, name: str) -> KvmSegment:
        """The descriptor cache; refreshed from the GDT when the guest reloaded the selector."""
        cached = self.seg_cache.get(name)
        if name == "tr" and self.uc is not None and cached is not None and not cached.unusable:
            sel, base, limit, flags = self.uc.reg_read(U.UC_X86_REG_TR)
            if (sel, base, limit) != (cached.selector, cached.base, cached.limit):   # the guest's LTR
                cached = self.seg_cache["tr"] = KvmSegment(
                    base=base, limit=limit, selector=sel, type=(flags >> 8) & 0xF, present=(flags >> 15) & 1,
                    dpl=(flags >> 13) & 3, s=(flags >> 12) & 1, g=(flags >> 23) & 1)
        if name in ("tr", "ldt"):  # Simplified: LLDT is not tracked; the values KVM_SET_SREGS gave.
            return cached if cached is not None else KvmSegment(unusable=1)
        sel = self.reg(name) if self.uc is not None else cached.selector
        if cached is not None and cached.selector == sel:
            if name == "fs" and self.uc is not None and self._reg_ids is REG_IDS:
                cached.base = self.uc.reg_read(U.UC_X86_REG_FS_BASE)
            if name == "gs" and self.uc is not None and self._reg_ids is REG_IDS:
                cached.base = self.uc.reg_read(U.UC_X86_REG_GS_BASE)
            return cached
        seg = self._load_descriptor(sel)
        self.seg_cache[name] = seg
        return seg

    def _load_descriptor(self, sel: int) -> KvmSegment:
        if not self.cr(0) & paging.X86_CR0_PE:
            return KvmSegment(base=sel << 4, limit=0xFFFF, selector=sel, type=3, present=1, s=1)
        gdt_base = self.uc.reg_read(U.UC_X86_REG_GDTR)[1]
        # An implicit supervisor access whatever the CPL (SDM 4.6): and the CPL is what is being loaded.
        raw = int.from_bytes(self.read_linear_bytes(gdt_base + (sel & ~7), 8, user=False), "little")
        limit = (raw & 0xFFFF) | ((raw >> 32) & 0xF0000)
        g = (raw >> 55) & 1
        return KvmSegment(base=((raw >> 16) & 0xFFFFFF) | (((raw >> 56) & 0xFF) << 24),
                          limit=(limit << 12) | 0xFFF if g else limit, selector=sel,
                          type=(raw >> 40) & 0xF, present=(raw >> 47) & 1, dpl=(raw >> 45) & 3,
                          db=(raw >> 54) & 1, s=(raw >> 44) & 1, l=(raw >> 53) & 1, g=g, avl=(raw >> 52) & 1)

    def _snapshot(self) -> None:
        """After guest execution: reread RIP, CS, RFLAGS, CR0, CR3, CR4 and the legacy GPRs in one
        uc_reg_read_batch (what exits and the emulator read first), and revalidate the cached mode."""
        vals = self._snap_vals
        if self._reg_ids is not REG_IDS:   # the 32-bit CPU writes 4 bytes: clear the rest first
            ctypes.memset(vals, 0, ctypes.sizeof(vals))
        uc_reg_read_batch(self._uch, self._snap_ids, self._snap_ptrs, len(vals))
        rip, cs, rflags, cr0, cr3, cr4, rax, rbx, rcx, rdx, rsi, rdi = vals[:]
        hi = self._hi
        if hi:
            rip |= hi.get("rip", 0) << 32
            rflags |= hi.get("rflags", 0) << 32
            rax, rbx, rcx, rdx, rsi, rdi = (v | hi.get(n, 0) << 32 for v, n in
                                            zip((rax, rbx, rcx, rdx, rsi, rdi), _SNAP_GPRS))
        self._rc = {"rip": rip, "cs": cs, "rflags": rflags, 0: cr0, 3: cr3, 4: cr4, "rax": rax, "rbx": rbx,
                    "rcx": rcx, "rdx": rdx, "rsi": rsi, "rdi": rdi}
        self._mode_stale = False
        key = (cr0, cs, rflags & event.EFLAGS_VM)
        if key != self._mode_key:
            self._mode_key = key
            self._mode = self._efer = None

    def mode(self) -> str:
        """CPU mode as the emulator's init_emulate_ctxt classifies it (cached until state changes)."""
        if self._mode_stale:
            # After guest execution: the mode can only have changed with CR0, CS or EFLAGS.VM.
            self._mode_stale = False
            key = (self.cr(0), self.reg("cs"), self.reg("rflags") & event.EFLAGS_VM)
            if key != self._mode_key:
                self._mode_key = key
                self._mode = self._efer = None
        if self._mode is None:
            self._mode = self._compute_mode()
        return self._mode

    def _compute_mode(self) -> str:
        if not self.cr(0) & paging.X86_CR0_PE:
            return "real"
        if self.reg("rflags") & event.EFLAGS_VM:
            return "vm86"
        cs = self.segment("cs")
        if self.efer() & paging.EFER_LMA:
            return "long64" if cs.l else "compat"
        return "prot32" if cs.db else "prot16"

    def cpl(self) -> int:
        return 0 if self.mode() == "real" else self.reg("cs") & 3   # CS.RPL is the CPL in protected mode

    def seg_base(self, name: str) -> int:
        return self.segment(name).base

    def linear_rip(self) -> int:
        rip = self._rc.get("rip")
        if rip is None:
            rip = self.reg("rip")
        if self._mode == "long64" and not self._mode_stale:
            return rip
        return rip if self.mode() == "long64" else (self.segment("cs").base + rip) & 0xFFFF_FFFF


def _copy_seg(seg: KvmSegment) -> KvmSegment:
    new = KvmSegment()
    ctypes.memmove(ctypes.addressof(new), ctypes.addressof(seg), ctypes.sizeof(KvmSegment))
    return new
