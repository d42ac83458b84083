"""The CPU's register file and descriptor caches, read the way KVM's register cache reads the
VMCS: lazily, cached until the guest runs again.  GPRs and control registers go through
unicorn's register API (always its 64-bit engine, full width); the descriptor caches, EFER and
the translation flags are read and written in place in QEMU's CPUX86State (cpux86.py)."""

from __future__ import annotations

import ctypes

from unicorn import x86_const as U

from kvmsim.hw import event, paging
from kvmsim.hw.apicdef import APIC_BASE_RESET
from kvmsim.hw.vmcs import Vector
from kvmsim.hw.cpux86 import (DESC_B_MASK, DESC_L_MASK, DESC_P_MASK, HF_CS32_MASK, HF_CS64_MASK, HF_LMA_MASK, HF_PE_MASK, R_CS, R_SS, SEG_INDEX,
                              SegmentCache, update_hflags)
from kvmsim.hw.ucraw import uc_reg_read, uc_reg_read_batch, uc_reg_write
from kvmsim.uapi import KvmDtable, KvmRegs, KvmSegment, KvmSregs


GPR_IDS = {
    "rax": U.UC_X86_REG_RAX, "rbx": U.UC_X86_REG_RBX, "rcx": U.UC_X86_REG_RCX, "rdx": U.UC_X86_REG_RDX,
    "rsi": U.UC_X86_REG_RSI, "rdi": U.UC_X86_REG_RDI, "rsp": U.UC_X86_REG_RSP, "rbp": U.UC_X86_REG_RBP,
    "r8": U.UC_X86_REG_R8, "r9": U.UC_X86_REG_R9, "r10": U.UC_X86_REG_R10, "r11": U.UC_X86_REG_R11,
    "r12": U.UC_X86_REG_R12, "r13": U.UC_X86_REG_R13, "r14": U.UC_X86_REG_R14, "r15": U.UC_X86_REG_R15,
    "rip": U.UC_X86_REG_RIP, "rflags": U.UC_X86_REG_RFLAGS,
}
SEG_IDS = {"cs": U.UC_X86_REG_CS, "ds": U.UC_X86_REG_DS, "es": U.UC_X86_REG_ES, "fs": U.UC_X86_REG_FS,
           "gs": U.UC_X86_REG_GS, "ss": U.UC_X86_REG_SS}
REG_IDS = {**GPR_IDS, **SEG_IDS}
MSR_EFER = 0xC0000080
# Read with RIP, CS, RFLAGS, CR0, CR3, CR4 after every exit (what exits and the emulator read first).
_SNAP_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")
SNAP_IDS = [U.UC_X86_REG_RIP, U.UC_X86_REG_CS, U.UC_X86_REG_RFLAGS, U.UC_X86_REG_CR0, U.UC_X86_REG_CR3,
            U.UC_X86_REG_CR4] + [GPR_IDS[n] for n in _SNAP_GPRS]
_SNAP_COUNT = len(SNAP_IDS)
_CR_IDS = {0: U.UC_X86_REG_CR0, 2: U.UC_X86_REG_CR2, 3: U.UC_X86_REG_CR3, 4: U.UC_X86_REG_CR4, 8: U.UC_X86_REG_CR8}
_MODE_HFLAGS = HF_PE_MASK | HF_CS32_MASK | HF_CS64_MASK | HF_LMA_MASK
# Access rights of a data segment loaded in virtual-8086 mode (SDM 20.2.1): present, DPL 3, RW, accessed.
_VM86_DATA_FLAGS = 0x3 << 8 | 1 << 12 | 3 << 13 | 1 << 15


def seg_from_cache(sc: SegmentCache) -> KvmSegment:
    """struct kvm_segment from a descriptor cache; not present = unusable, as VMX's AR byte says."""
    f = sc.flags
    return KvmSegment(base=sc.base, limit=sc.limit, selector=sc.selector & 0xFFFF, type=(f >> 8) & 0xF,
                      present=(f >> 15) & 1, dpl=(f >> 13) & 3, db=(f >> 22) & 1, s=(f >> 12) & 1,
                      l=(f >> 21) & 1, g=(f >> 23) & 1, avl=(f >> 20) & 1, unusable=0 if f & DESC_P_MASK else 1)


def seg_to_cache(sc: SegmentCache, seg: KvmSegment) -> None:
    """Load a descriptor cache from a kvm_segment; an unusable segment keeps no access rights
    (vmx_segment_access_rights: AR = unusable only), selector, base and limit stay."""
    sc.selector, sc.base, sc.limit = seg.selector, seg.base & 0xFFFF_FFFF_FFFF_FFFF, seg.limit
    if seg.unusable or not seg.present:
        sc.flags = 0
    else:
        sc.flags = ((seg.type & 0xF) << 8 | (seg.s & 1) << 12 | (seg.dpl & 3) << 13 | 1 << 15
                    | (seg.avl & 1) << 20 | (seg.l & 1) << 21 | (seg.db & 1) << 22 | (seg.g & 1) << 23)


class CpuState:
    """Mixin of SiliconVcpu: GPRs, control registers, descriptor caches, CPU mode.

    One x86-64 CPU in every mode: registers are read and written at full width, and the mode
    follows CR0.PE, EFLAGS.VM, EFER.LMA and the CS descriptor cache (`self._env`, the engine's
    CPUX86State) at each exit, whatever changed them (the guest, the emulator, KVM_SET_SREGS)."""

    def get_regs(self) -> KvmRegs:
        regs = KvmRegs()
        for name in GPR_IDS:
            setattr(regs, name, self.reg(name))
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        self.flush_regs()
        self._rc.clear()
        for name in GPR_IDS:
            self.set_reg(name, getattr(regs, name))

    def get_sregs(self) -> KvmSregs:
        env = self._env
        s = KvmSregs()
        for name in KvmSregs.SEGMENTS:
            setattr(s, name, self.segment(name))
        s.gdt, s.idt = KvmDtable(base=env.gdt.base, limit=env.gdt.limit), KvmDtable(base=env.idt.base,
                                                                                 limit=env.idt.limit)
        s.cr0, s.cr2, s.cr3, s.cr4, s.cr8 = self.cr(0), self.cr(2), self.cr(3), self.cr(4), self.cr(8)
        s.efer = env.efer
        s.apic_base = APIC_BASE_RESET   # Simplified: no local APIC model; MSR_IA32_APICBASE keeps its reset value
        return s

    def set_sregs(self, s: KvmSregs) -> None:
        """KVM_SET_SREGS: any mode at any time.  Control registers go through the engine (its TLB
        and paging follow them); EFER (LMA included, as __set_sregs takes it) and the eight
        descriptor caches are written in place, then the translation flags are recomputed."""
        uc, env = self.uc, self._env
        self.flush_regs()
        self._rc.clear()
        uc.reg_write(U.UC_X86_REG_GDTR, (0, s.gdt.base, s.gdt.limit, 0))
        uc.reg_write(U.UC_X86_REG_IDTR, (0, s.idt.base, s.idt.limit, 0))
        rip = env.eip           # the engine truncates EIP when CR0.PG leaves long mode; KVM does not
        uc.reg_write(U.UC_X86_REG_CR4, s.cr4)
        uc.msr_write(MSR_EFER, s.efer)
        uc.reg_write(U.UC_X86_REG_CR3, s.cr3)
        uc.reg_write(U.UC_X86_REG_CR0, s.cr0)
        env.eip = rip
        uc.reg_write(U.UC_X86_REG_CR2, s.cr2)
        uc.reg_write(U.UC_X86_REG_CR8, s.cr8)
        env.efer = s.efer
        for name in KvmSregs.SEGMENTS:
            seg_to_cache(self._cache(name), getattr(s, name))
        self._state_changed()
        self.entry_checks_due = True   # the next VM entry checks what was written (cpu._invalid_guest_segments)

    def _cache(self, name: str) -> SegmentCache:
        env = self._env
        return env.tr if name == "tr" else env.ldt if name == "ldt" else env.segs[SEG_INDEX[name]]

    def _state_changed(self) -> None:
        """CR0/EFER/EFLAGS or a descriptor cache changed outside guest execution."""
        update_hflags(self._env)
        for name in SEG_IDS:
            self._rc.pop(name, None)
        self._mode = self._efer = None
        self._mode_key = None

    def reg(self, name: str) -> int:
        """A GPR/RIP/RFLAGS/selector.  Cached until the guest runs again (like vcpu->arch.regs_avail);
        read straight through uc_reg_read, since unicorn's Python wrapper costs ~6 us a call."""
        v = self._rc.get(name)
        if v is not None:
            return v
        buf = self._regbuf
        buf.value = 0
        uc_reg_read(self._uch, REG_IDS[name], self._regbuf_ref)
        v = self._rc[name] = buf.value
        return v

    def set_reg(self, name: str, value: int) -> None:
        if name in SEG_IDS:
            self.load_seg(name, value & 0xFFFF)
            return
        value &= 0xFFFF_FFFF_FFFF_FFFF
        # Like KVM's regs_dirty: the value reaches the CPU at the next VM entry (flush_regs).
        self._rc[name] = value
        self._dirty[name] = (GPR_IDS[name], value)
        if name == "rflags":
            self._mode = None
            self._mode_key = None
            self._hflags_dirty = True

    def flush_regs(self) -> None:
        """Write the registers changed since the guest last ran into unicorn (before it runs)."""
        uch, buf, ref = self._uch, self._wbuf, self._wbuf_ref
        for rid, value in self._dirty.values():
            buf.value = value
            uc_reg_write(uch, rid, ref)
        self._dirty.clear()
        if self._hflags_dirty:   # EFLAGS.VM/IOPL/TF are part of the translation flags
            self._hflags_dirty = False
            update_hflags(self._env)

    def set_cr(self, n: int, value: int) -> None:
        self.uc.reg_write(_CR_IDS[n], value)
        self._rc.pop(n, None)
        self._state_changed()

    def load_seg(self, name: str, selector: int) -> None:
        """The CPU loads a segment register (MOV/POP Sreg, far transfer, event delivery): in real
        mode only selector and base change, in virtual-8086 mode the attributes are fixed, in
        protected mode the hidden part comes from the GDT/LDT current now (SDM 3.4.3, 20.1.1)."""
        sc = self._cache(name)
        mode = self.mode()
        if mode == "real":
            sc.selector, sc.base = selector, selector << 4
        elif mode == "vm86":
            sc.selector, sc.base, sc.limit, sc.flags = selector, selector << 4, 0xFFFF, _VM86_DATA_FLAGS | (
                0x800 if name == "cs" else 0)
        elif selector & ~3 == 0 and name != "cs":
            # A null selector: unusable (in 64-bit mode SS keeps the new CPL as its DPL).
            sc.selector, sc.base, sc.limit, sc.flags = selector, 0, 0, (selector & 3) << 13 if name == "ss" else 0
        else:
            seg = self._load_descriptor(selector)
            if not seg.present:   # the cache keeps its old contents
                raise event.DeliveryFault(Vector.SS if name == "ss" else Vector.NP, selector & ~3)
            seg_to_cache(sc, seg)
        if name in ("fs", "gs"):
            self._rc.pop(name + "_base", None)
        self._state_changed()

    def load_cs(self, selector: int) -> None:
        self.load_seg("cs", selector)

    def enter_ring0(self, cs: int, ss: int) -> None:
        """CS and SS of an event delivered to ring 0 from an outer ring (SS from the TSS, or a
        null SS with RPL 0 in long mode); simplified: no checks on the new SS descriptor."""
        self.load_seg("cs", cs)
        self.load_seg("ss", ss)

    def set_segment(self, name: str, seg: KvmSegment) -> None:
        """Write one descriptor cache as given (KVM's kvm_set_segment, used by the emulator)."""
        seg_to_cache(self._cache(name), seg)
        self._state_changed()

    def set_cr2(self, value: int) -> None:
        self.uc.reg_write(U.UC_X86_REG_CR2, value)
        self._rc.pop(2, None)

    def cr(self, n: int) -> int:
        v = self._rc.get(n)          # cached with the GPRs until the guest runs again
        if v is not None:
            return v
        buf = self._regbuf
        buf.value = 0
        uc_reg_read(self._uch, _CR_IDS[n], self._regbuf_ref)
        self._rc[n] = buf.value
        return buf.value

    def efer(self) -> int:
        if self._efer is None:
            self._efer = self._env.efer
        return self._efer

    def set_efer(self, value: int) -> None:
        """WRMSR(EFER) reaches the CPU (LMA follows LME and CR0.PG, as the CPU does)."""
        lma = self.efer() & paging.EFER_LMA
        self.uc.msr_write(MSR_EFER, (value & ~paging.EFER_LMA) | lma)
        self._state_changed()

    def load_msr(self, index: int, value: int) -> None:
        """KVM loads a guest MSR value into the CPU (SYSCALL's STAR/LSTAR/CSTAR/FMASK, TSC_AUX)."""
        (self.uc or self._power_on()).msr_write(index, value)

    def msr(self, index: int) -> int:
        """An MSR as the CPU holds it (the ones load_msr writes, FS/GS bases, SYSENTER_*)."""
        return (self.uc or self._power_on()).msr_read(index)

    def gdtr(self) -> tuple[int, int]:
        return self._env.gdt.base, self._env.gdt.limit

    def idtr(self) -> tuple[int, int]:
        return self._env.idt.base, self._env.idt.limit

    def segment(self, name: str) -> KvmSegment:
        """The descriptor cache as the CPU holds it (loaded with the register, not looked up)."""
        seg = seg_from_cache(self._cache(name))
        if name == "tr" and seg.type in (1, 9):
            seg.type |= 2   # QEMU's LTR marks the TSS busy in the GDT only; the CPU's TR cache says busy too
        return seg

    def _load_descriptor(self, sel: int) -> KvmSegment:
        """The descriptor a protected-mode load of `sel` reads from the GDT or LDT: #GP(selector)
        beyond the table's limit, #PF if the table is not mapped (event.DeliveryFault either way)."""
        env = self._env
        table, limit = (env.ldt.base, env.ldt.limit) if sel & 4 else (env.gdt.base, env.gdt.limit)
        if (sel | 7) > limit:
            raise event.DeliveryFault(Vector.GP, sel & ~3)
        # An implicit supervisor access whatever the CPL (SDM 4.6): and the CPL is what is being loaded.
        raw = self.read_linear(table + (sel & ~7), 8, user=False)
        limit = (raw & 0xFFFF) | ((raw >> 32) & 0xF0000)
        g = (raw >> 55) & 1
        base = ((raw >> 16) & 0xFFFFFF) | (((raw >> 56) & 0xFF) << 24)
        if not (raw >> 44) & 1 and self.mode() in ("long64", "compat"):   # 16-byte system descriptor
            base |= self.read_linear(table + (sel & ~7) + 8, 4, user=False) << 32
        return KvmSegment(base=base, limit=(limit << 12) | 0xFFF if g else limit, selector=sel,
                          type=(raw >> 40) & 0xF, present=(raw >> 47) & 1, dpl=(raw >> 45) & 3,
                          db=(raw >> 54) & 1, s=(raw >> 44) & 1, l=(raw >> 53) & 1, g=g, avl=(raw >> 52) & 1)

    def _snapshot(self) -> None:
        """After guest execution: reread RIP, CS, RFLAGS, CR0, CR3, CR4 and the legacy GPRs in one
        uc_reg_read_batch, and revalidate the cached mode against the translation flags."""
        uc_reg_read_batch(self._uch, self._snap_ids, self._snap_ptrs, _SNAP_COUNT)
        rip, cs, rflags, cr0, cr3, cr4, rax, rbx, rcx, rdx, rsi, rdi = self._snap_view.tolist()
        self._rc = {"rip": rip, "cs": cs & 0xFFFF, "rflags": rflags, 0: cr0, 3: cr3, 4: cr4, "rax": rax,
                    "rbx": rbx, "rcx": rcx, "rdx": rdx, "rsi": rsi, "rdi": rdi}
        self._mode_stale = False
        key = (self._hflags.value & _MODE_HFLAGS) | (rflags & event.EFLAGS_VM)
        if key != self._mode_key:   # EFER changes by a WRMSR exit (set_efer) or with LMA, in the key
            self._mode_key = key
            self._mode = self._efer = None

    def mode(self) -> str:
        """CPU mode as the emulator's init_emulate_ctxt classifies it (cached until state changes)."""
        if self._mode_stale:
            # After guest execution: the mode can only have changed with the translation flags or EFLAGS.VM.
            self._mode_stale = False
            key = (self._hflags.value & _MODE_HFLAGS) | (self.reg("rflags") & event.EFLAGS_VM)
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
        cs = self._env.segs[R_CS].flags
        if self.efer() & paging.EFER_LMA:
            return "long64" if cs & DESC_L_MASK else "compat"
        return "prot32" if cs & DESC_B_MASK else "prot16"

    def cpl(self) -> int:
        """vmx_get_cpl: SS.DPL (0 in real mode, 3 in virtual-8086 mode as SS.DPL is there)."""
        return 0 if self.mode() == "real" else (self._ss_flags.value >> 13) & 3

    def seg_base(self, name: str) -> int:
        return self._cache(name).base

    def linear_rip(self) -> int:
        rip = self._rc.get("rip")
        if rip is None:
            rip = self.reg("rip")
        if self._mode == "long64" and not self._mode_stale:
            return rip
        return rip if self.mode() == "long64" else (self._env.segs[R_CS].base + rip) & 0xFFFF_FFFF

    # ---------------------------------------------------------------- debug registers
    _DR_IDS = (U.UC_X86_REG_DR0, U.UC_X86_REG_DR1, U.UC_X86_REG_DR2, U.UC_X86_REG_DR3,
               U.UC_X86_REG_DR6, U.UC_X86_REG_DR7)

    def load_debug_regs(self, db: list[int], dr6: int) -> None:
        """KVM's set_debugreg before entry (DR0-3, DR6): what native MOV DR then sees, with
        GUEST_DR7 (`vmcs.guest_dr7`, which KVM writes on its own, vmx_set_dr7); the breakpoints DR7
        enables are armed by hw/debugregs.py, not by the engine's own DR7."""
        uc = self.uc or self._power_on()
        for rid, v in zip(self._DR_IDS, (*db, dr6, self.vmcs.guest_dr7 & ~0xFF)):
            uc.reg_write(rid, v)
        self.set_debugregs(list(db))                     # type: ignore[attr-defined]  (hw/debugregs.py)

    def read_debug_regs(self) -> tuple[tuple[int, int, int, int], int, int]:
        """get_debugreg after the exit: DR0-3, DR6 and GUEST_DR7 as the guest left them."""
        uc = self.uc or self._power_on()
        vals = [uc.reg_read(rid) for rid in self._DR_IDS[:5]]
        return (vals[0], vals[1], vals[2], vals[3]), vals[4], self.vmcs.guest_dr7
