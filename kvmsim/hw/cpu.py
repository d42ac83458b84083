"""The silicon: a unicorn-backed vCPU in VMX non-root mode that synthesizes VM exits.

The guest runs natively in unicorn.  Instructions that exit under KVM's controls are
found when a translation block is first seen (a block hook that covers only code not
yet scanned, so hot code runs hook-free) and become unicorn exit addresses: emulation
stops *before* them, RIP at the instruction, as a VM exit leaves it.  MMIO (no memslot)
stops precisely through the unmapped-memory hook.  Hooks only record; the VM exit is
built after `emu_start` returns (STYLE.md: nothing crosses the unicorn boundary).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from capstone import CS_AC_WRITE, CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from capstone.x86_const import X86_OP_MEM, X86_REG_RIP
from unicorn import (UC_ARCH_X86, UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_UNMAPPED, UC_MEM_FETCH_UNMAPPED,
                     UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_UNMAPPED, UC_MODE_16, UC_MODE_32, UC_MODE_64, UC_PROT_ALL, Uc, UcError)
from unicorn import unicorn_const as UCC
from unicorn import x86_const as U

from unicorn.unicorn_py3.unicorn import HOOK_MEM_INVALID_CFUNC, uc_hook_h, uclib

from kvmsim.errors import KvmSimBug
from kvmsim.hw import event, paging, quirks
from kvmsim.hw.exits import EXITING_INSNS, Action, ExitingInsn, decode_io
from kvmsim.hw.vmcs import (EPT_VIOLATION_ACC_INSTR, EPT_VIOLATION_ACC_READ, EPT_VIOLATION_ACC_WRITE,
                            EPT_VIOLATION_GVA_IS_VALID, EPT_VIOLATION_GVA_TRANSLATED, EXCEPTIONS_WITH_ERROR_CODE, ExitReason,
                            CPU_BASED_NMI_WINDOW_EXITING, GUEST_INTR_STATE_NMI, NMI_HOST_INTR_INFO, IntrType,
                            IoExitQual, Vector, Vmcs, intr_info)
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
_U64_AT = ctypes.c_uint64.from_address
_WALK_ADDR52 = 0x000F_FFFF_FFFF_F000
_UC_EMU_STOP = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p)
_CR_IDS = {0: U.UC_X86_REG_CR0, 2: U.UC_X86_REG_CR2, 3: U.UC_X86_REG_CR3, 4: U.UC_X86_REG_CR4, 8: U.UC_X86_REG_CR8}
X86_CR4_OSXSAVE = 1 << 18
EFLAGS_RF = 1 << 16
# KVM's exception bitmap with EPT on (vmx update_exception_bitmap); KVM adds #GP for the VMware backdoor.
DEFAULT_EXCEPTION_BITMAP = frozenset({Vector.UD, Vector.MC, Vector.AC})


@dataclass(slots=True)
class _Decoded:
    """An exiting instruction found by the scanner, cached by address."""

    insn: ExitingInsn
    length: int
    code: bytes
    mnemonic: str
    cs_mode: int
    io: dict = field(default_factory=dict)   # decode_io result per CPU mode
    hook: object = None                      # the unicorn code hook that stops the CPU here


class SiliconVcpu:
    """One logical CPU.  KVM's model drives it with `vmx_vcpu_enter_exit`-style `enter_guest()`."""

    def __init__(self) -> None:
        self.uc: Uc | None = None
        self.vmcs = Vmcs()
        self.memslots: dict[int, tuple[int, int, int]] = {}   # slot -> (gpa, size, host address)
        self._pending_regs: KvmRegs | None = None
        self._pending_sregs: KvmSregs | None = None
        self.seg_cache: dict[str, KvmSegment] = {}
        self.ept_mmio_gfns: set[int] = set()     # EPT entries KVM turned into MMIO SPTEs (misconfig)
        self.msr_passthrough: set[int] = set()   # MSR bitmap: indices that do not exit
        self.exception_bitmap: frozenset[int] = DEFAULT_EXCEPTION_BITMAP
        self.kick_pending = False   # set from another thread (a signal to the vCPU thread)
        # A host NMI (perf PMI, watchdog) after this many guest instructions without another exit.
        self.host_nmi_every: int | None = None
        self._exits: dict[int, _Decoded] = {}
        self._scanned: list[tuple[int, int]] = []
        self._scan_hooks: dict[tuple[int, int], int] = {}
        self._pending: tuple | None = None
        self._rescan = False
        self._cs: dict[int, Cs] = {}
        self.native_exceptions = 0
        self._reg_ids = REG_IDS
        self._mode: str | None = None        # cached CPU mode; invalidated whenever it can change
        self._uch = None
        self._regbuf = ctypes.c_uint64()
        self._rc: dict[str, int] = {}        # register values read since the guest last ran
        self._len_cache: dict[int, int] = {}  # linear RIP -> instruction length (EPT exits)
        self._hi: dict[str, int] = {}        # 16/32-bit unicorn: upper halves (and R8-R15) it lacks
        self._efer: int | None = None
        self._mode_stale = False
        self._mode_key: tuple[int, int, int] | None = None

    # ------------------------------------------------------------ setup

    def map_memslot(self, slot: int, gpa: int, size: int, host_addr: int) -> None:
        self.memslots[slot] = (gpa, size, host_addr)
        if self.uc is not None:
            self.uc.mem_map_ptr(gpa, size, UC_PROT_ALL, host_addr)

    def _power_on(self) -> Uc:
        sregs = self._pending_sregs or KvmSregs()
        lma = bool(sregs.efer & paging.EFER_LMA)
        mode = UC_MODE_64 if lma else (UC_MODE_32 if sregs.cr0 & paging.X86_CR0_PE else UC_MODE_16)
        uc = Uc(UC_ARCH_X86, mode)
        self._reg_ids = REG_IDS if mode == UC_MODE_64 else REG_IDS_32
        self._uch = uc._uch
        ids = [self._reg_ids["rip"], self._reg_ids["cs"], self._reg_ids["rflags"], U.UC_X86_REG_CR0,
               U.UC_X86_REG_CR3, U.UC_X86_REG_CR4]
        self._snap_ids = (ctypes.c_int32 * len(ids))(*ids)
        self._snap_vals = [ctypes.c_uint64() for _ in ids]
        self._snap_ptrs = (ctypes.c_void_p * len(ids))(*(ctypes.addressof(v) for v in self._snap_vals))
        for gpa, size, addr in self.memslots.values():
            uc.mem_map_ptr(gpa, size, UC_PROT_ALL, addr)
        # Registered raw (unicorn's Python wrapper adds ~1 us to every MMIO exit); kept alive on self.
        self._unmapped_cb = HOOK_MEM_INVALID_CFUNC(self._on_unmapped_raw)
        self._unmapped_hook = uc_hook_h()
        status = uclib.uc_hook_add(self._uch, ctypes.byref(self._unmapped_hook), UC_HOOK_MEM_UNMAPPED,
                                   self._unmapped_cb, None, ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status:
            raise UcError(status)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        self.uc = uc
        self._set_scan_hooks([(0, (1 << 64) - 1)])
        if self._pending_sregs is not None:
            self._apply_sregs(self._pending_sregs)
        if self._pending_regs is not None:
            self._apply_regs(self._pending_regs)
        self._pending_sregs = self._pending_regs = None
        return uc

    # ------------------------------------------------------------ registers (KVM_GET/SET_[S]REGS)

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
        uclib.uc_reg_read(self._uch, rid, ctypes.byref(buf))
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
        if rid is not None:
            mask = 0xFFFF_FFFF if self._reg_ids is REG_IDS_32 and name not in SEG_IDS else 0xFFFF_FFFF_FFFF_FFFF
            if mask != 0xFFFF_FFFF_FFFF_FFFF and (value >> 32 or name in self._hi):
                self._hi[name] = value >> 32
            buf = ctypes.c_uint64(value & mask)
            uclib.uc_reg_write(self._uch, rid, ctypes.byref(buf))
            if name in SEG_IDS:
                self._rc.pop(name, None)   # unicorn reloads the hidden part; reread the selector
                self._mode = None
            else:
                self._rc[name] = value
                if name == "rflags":
                    self._mode = None

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
        uclib.uc_reg_read(self._uch, _CR_IDS[n], ctypes.byref(buf))
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
        """After guest execution: reread RIP, CS, RFLAGS, CR0, CR3, CR4 in one uc_reg_read_batch (the
        registers every exit needs), and revalidate the cached mode against them."""
        ids = self._snap_ids
        vals = self._snap_vals
        for v in vals:
            v.value = 0
        uclib.uc_reg_read_batch(self._uch, ids, self._snap_ptrs, len(vals))
        rip, cs, rflags, cr0, cr3, cr4 = (v.value for v in vals)
        rc = self._rc
        rc.clear()
        if self._hi:
            rip |= self._hi.get("rip", 0) << 32
            rflags |= self._hi.get("rflags", 0) << 32
        rc["rip"], rc["cs"], rc["rflags"], rc[0], rc[3], rc[4] = rip, cs, rflags, cr0, cr3, cr4
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
        return 0 if self.mode() == "real" else self.segment("cs").selector & 3

    def seg_base(self, name: str) -> int:
        return self.segment(name).base

    def linear_rip(self) -> int:
        rip = self.reg("rip")
        if self._mode == "long64" and not self._mode_stale:
            return rip
        return rip if self.mode() == "long64" else (self.segment("cs").base + rip) & 0xFFFF_FFFF

    # ------------------------------------------------------------ memory as the CPU sees it

    def gpa_is_ram(self, gpa: int) -> bool:
        return any(g <= gpa < g + s for g, s, _ in self.memslots.values())

    def read_phys(self, gpa: int, size: int) -> int:
        """Guest-physical RAM straight from the memslot's host memory (unicorn's mem_read costs ~4 us)."""
        for g, sz, addr in self.memslots.values():
            if g <= gpa and gpa + size <= g + sz:
                return int.from_bytes(ctypes.string_at(addr + gpa - g, size), "little")
        return int.from_bytes(self.uc.mem_read(gpa, size), "little")

    def _host(self, gpa: int, size: int) -> int:
        """Host address of guest RAM [gpa, gpa + size), or 0 if it is not all in one memslot."""
        for g, sz, addr in self.memslots.values():
            if g <= gpa and gpa + size <= g + sz:
                return addr + gpa - g
        return 0

    def walk(self, linear: int, write: bool = False, user: bool = False, fetch: bool = False) -> int:
        """The guest page walk, done in software on every call as the CPU (and KVM's
        paging_tmpl.h walk_addr_generic) does: raises paging.PageFault.  The common case (4-level paging, every
        entry present and permitting the access, tables in RAM memslots) reads the entries straight
        from the memslots' host memory; anything else is left to paging.walk, which decides."""
        cr0, efer = self.cr(0), self.efer()
        if cr0 & paging.X86_CR0_PG and efer & paging.EFER_LMA:
            slots = self.memslots.values()
            table = self.cr(3) & _WALK_ADDR52
            allowed_w = allowed_u = True
            nx = False
            shift = 39
            while True:
                pte = table + ((linear >> shift) & 0x1FF) * 8
                for g, sz, host in slots:
                    if g <= pte and pte + 8 <= g + sz:
                        entry = _U64_AT(host + pte - g).value
                        break
                else:
                    break                              # a table outside RAM: paging.walk reads it
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
                    return entry & _WALK_ADDR52 & ~(size - 1) | (linear & (size - 1))
                table = entry & _WALK_ADDR52
                shift -= 9
        return paging.walk(self.read_phys, cr0, self.cr(3), self.cr(4), efer, linear, write=write, user=user, fetch=fetch)

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
            raise event.DeliveryFault(Vector.PF, pf.error_code) from None
        except UcError:
            raise event.DeliveryFault(Vector.GP, 0) from None

    def write_linear(self, addr: int, size: int, value: int, user: bool | None = None) -> None:
        data = value.to_bytes(size, "little")
        try:
            while data:
                chunk = min(len(data), 0x1000 - (addr & 0xFFF))
                self.uc.mem_write(self.translate(addr, write=True, user=user), data[:chunk])
                addr, data = addr + chunk, data[chunk:]
        except paging.PageFault as pf:
            raise event.DeliveryFault(Vector.PF, pf.error_code) from None
        except UcError:
            raise event.DeliveryFault(Vector.GP, 0) from None

    # ------------------------------------------------------------ VM entry / exit

    def enter_guest(self) -> None:
        """VM entry, run, VM exit: on return the VMCS exit fields describe why the guest stopped."""
        uc = self.uc or self._power_on()
        vmcs = self.vmcs
        if vmcs.vm_entry_intr_info_field & 0x80000000:
            info, vmcs.vm_entry_intr_info_field = vmcs.vm_entry_intr_info_field, 0
            if self._deliver(info & 0xFF, IntrType(info & 0x700),
                             vmcs.vm_entry_exception_error_code if info & 0x800 else None,
                             cr2=None, inst_len=vmcs.vm_entry_instruction_len):
                return
        # Every exit path sets the exit fields through _exit(); IDT-vectoring info stays 0 because
        # event delivery completes inside one entry here.
        # Unicorn has no instruction breakpoints, so it neither honours nor clears RFLAGS.RF; the
        # CPU clears RF when the next instruction completes (SDM 18.3.1.1).  KVM leaves RF set on
        # an unfinished REP string (emulate.c), so drop it here, before the guest can see it.
        if (rflags := self.reg("rflags")) & EFLAGS_RF:
            self.set_reg("rflags", rflags & ~EFLAGS_RF)
        while True:
            if self.kick_pending:
                self._exit(ExitReason.EXTERNAL_INTERRUPT, intr=0x80000000 | 0xEC)  # host timer/IPI kick
                return
            self._pending = None
            rip = self.reg("rip")
            start = rip if self._mode == "long64" and not self._mode_stale else self.linear_rip()
            err: UcError | None = None
            if start not in self._exits:
                status = uclib.uc_emu_start(self._uch, rip, 1 << 63, 0, self.host_nmi_every or 0)
                if status:
                    err = UcError(status)
                self._snapshot()  # the guest may have switched modes (MOV CR0 is native)
            if self._rescan:
                self._rescan = False
                continue
            if self._pending is not None:
                if self._handle_pending():
                    return
                continue
            if err is not None:
                if err.errno == UCC.UC_ERR_INSN_INVALID:
                    # Unicorn cannot translate some exiting instructions (VMREAD, VMWRITE), so the
                    # block scanner never saw them; the CPU exits on them before any #UD.
                    dec = self._exits.get(self.linear_rip()) or self._scan_invalid_insn()
                    if dec is not None:
                        if self._exiting_insn(dec):
                            return
                        continue
                    if self._vex_mmio_exit():
                        return
                    if self._exception(Vector.UD, None):
                        return
                    continue
                raise KvmSimBug(f"unicorn stopped with {err} at rip {self.reg('rip'):#x}")
            here = self.linear_rip()
            dec = self._exits.get(here)
            if dec is not None:
                if self._exiting_insn(dec):
                    return
                continue
            if self.kick_pending:
                continue
            if self.host_nmi_every:   # the instruction budget ran out: the host NMI arrives
                return self._exit(ExitReason.EXCEPTION_NMI, intr=NMI_HOST_INTR_INFO)
            if quirks.reset_old_exception(uc):
                continue  # unicorn swallowed an escalated fault and halted: re-run the instruction
            raise KvmSimBug(f"guest stopped for no reason at rip {self.reg('rip'):#x}")

    def _exit(self, reason: ExitReason, qual: int = 0, length: int = 0, intr: int = 0, err: int = 0,
              gpa: int = 0, gla: int = 0) -> bool:
        v = self.vmcs
        v.vm_exit_reason, v.exit_qualification, v.vm_exit_instruction_len = int(reason), qual, length
        v.vm_exit_intr_info, v.vm_exit_intr_error_code = intr, err
        v.guest_physical_address, v.guest_linear_address = gpa, gla
        return True

    def _exiting_insn(self, dec: _Decoded) -> bool:
        """The CPU reached a scanned instruction: exit, or do what the silicon does itself."""
        insn = dec.insn
        if insn.action is Action.EXIT:
            if insn.reason is ExitReason.IO_INSTRUCTION:
                mode = self.mode()
                io = dec.io.get(mode)
                if io is None:  # the qualification without the port, cached per mode
                    d = decode_io(dec.code, self._default_op32(), mode == "long64")
                    base = IoExitQual(d.size, d.is_in, d.string, d.rep, d.imm_port is not None, 0).encode()
                    io = dec.io[mode] = (base, d.imm_port)
                base, imm_port = io
                port = imm_port if imm_port is not None else self.reg("rdx") & 0xFFFF
                if mode != "real" and not self._io_permitted(port, (base & 7) + 1):
                    # SDM 25.1.1: the I/O-permission #GP comes before the VM exit.
                    return self._exception(Vector.GP, 0)
                return self._exit(insn.reason, base | (port << 16), dec.length)
            return self._exit(insn.reason, 0, dec.length)
        if insn.action is Action.IRET:
            return self._iret(dec)
        if insn.action is Action.MSR:
            ecx = self.reg("rcx") & 0xFFFF_FFFF
            if ecx not in self.msr_passthrough:
                return self._exit(insn.reason, 0, dec.length)
            self._passthrough_msr(insn.reason is ExitReason.MSR_WRITE, ecx)
            self.set_reg("rip", self.reg("rip") + dec.length)
            return False
        # Soft interrupt: INT3/INTO/INT1/INT n go straight through the guest IDT (not intercepted).
        op = dec.code[-2] if dec.mnemonic == "int" else dec.code[-1]
        vector = {0xCC: Vector.BP, 0xCE: Vector.OF, 0xF1: Vector.DB}.get(op, dec.code[-1])
        if dec.mnemonic == "into" and not self.reg("rflags") & (1 << 11):
            self.set_reg("rip", self.reg("rip") + dec.length)
            return False
        itype = IntrType.SOFT_INTR if dec.mnemonic == "int" else (
            IntrType.PRIV_SW_EXCEPTION if vector == Vector.DB else IntrType.SOFT_EXCEPTION)
        return self._deliver(vector, itype, None, cr2=None, inst_len=dec.length)

    def _scan_invalid_insn(self) -> _Decoded | None:
        """The exiting instruction unicorn refused to translate at RIP, recorded like a scanned one."""
        here = self.linear_rip()
        try:
            code = self.read_linear_bytes(here, 15)
        except (paging.PageFault, UcError):
            return None
        insn = next(self._disasm(code, here), None)
        spec = EXITING_INSNS.get(insn.id) if insn is not None else None
        if spec is None:
            return None
        dec = self._exits[here] = _Decoded(spec, insn.size, bytes(insn.bytes), insn.mnemonic, self._cs_mode())
        return dec

    def _vex_mmio_exit(self) -> bool:
        """Unicorn (QEMU 5 TCG) has no AVX, so it refuses VEX instructions.  Silicon with
        CR4.OSXSAVE set would start one whose memory operand has no memslot and stop it with
        an EPT violation/misconfig; make that exit.  Anything else stays #UD (AVX on RAM is not
        modelled)."""
        here = self.linear_rip()
        try:
            code = self.read_linear_bytes(here, 15)
        except (paging.PageFault, UcError):
            return False
        i = 0
        while i < len(code) and code[i] in (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67):
            i += 1
        if i >= len(code) - 1 or code[i] not in (0xC4, 0xC5) or not self.cr(4) & X86_CR4_OSXSAVE:
            return False
        if self.mode() != "long64" and code[i + 1] < 0xC0:
            return False  # outside 64-bit mode C4/C5 with ModRM.mod != 3 are LES/LDS
        md = Cs(CS_ARCH_X86, self._cs_mode())
        md.detail = True
        insn = next(md.disasm(code, here), None)
        if insn is None:
            return False
        for op in insn.operands:
            if op.type != X86_OP_MEM:
                continue
            linear = op.mem.disp + (insn.address + insn.size if op.mem.base == X86_REG_RIP else
                                    self._cs_reg(insn, op.mem.base))
            linear += self._cs_reg(insn, op.mem.index) * op.mem.scale
            linear &= (1 << 64) - 1 if self.mode() == "long64" else 0xFFFF_FFFF
            write = bool(op.access & CS_AC_WRITE)
            try:
                gpa = self.translate(linear, write=write)
            except paging.PageFault:
                return False
            if self.gpa_is_ram(gpa):
                return False
            return self._ept_exit(UC_MEM_WRITE_UNMAPPED if write else UC_MEM_READ_UNMAPPED, linear)
        return False

    def _cs_reg(self, insn, reg: int) -> int:
        """A capstone register id's value (0 for none), read through the 64-bit name."""
        if reg == 0:
            return 0
        name = insn.reg_name(reg)
        full = "r" + name[1:] if name[0] == "e" else name
        v = self.reg(full)
        return v & 0xFFFF_FFFF if name[0] == "e" else v

    def _io_permitted(self, port: int, size: int) -> bool:
        """CPL <= IOPL (and not vm86), or the TSS I/O permission bitmap clears every port bit."""
        flags = self.reg("rflags")
        if not flags & event.EFLAGS_VM and (self.reg("cs") & 3) <= (flags >> 12) & 3:  # CPL = CS.RPL
            return True
        tr = self.segment("tr")
        if tr.unusable or tr.limit < 0x67:
            return False
        try:
            base = tr.base + self.read_linear(tr.base + 0x66, 2)
            last = base + port // 8 + 1
            if last > tr.base + tr.limit:
                return False
            bits = self.read_linear(base + port // 8, 2)
        except event.DeliveryFault:
            return False
        return not (bits >> (port & 7)) & ((1 << size) - 1)

    def _iret(self, dec: _Decoded) -> bool:
        """IRET runs natively; it unblocks NMIs, and with NMI-window exiting the CPU exits right after."""
        blocked = self.vmcs.guest_interruptibility_info & GUEST_INTR_STATE_NMI
        if self._step_native(dec):
            return True
        if blocked:
            self.vmcs.guest_interruptibility_info &= ~GUEST_INTR_STATE_NMI
            if self.vmcs.cpu_based_vm_exec_control & CPU_BASED_NMI_WINDOW_EXITING:
                return self._exit(ExitReason.NMI_WINDOW)
        return False

    def _step_native(self, dec: _Decoded) -> bool:
        """Execute one scanned instruction in unicorn (its stop hook lifted meanwhile); True on an exit."""
        uc, addr = self.uc, self.linear_rip()
        self._del_stop_hook(dec.hook)
        self._pending = None
        err = None
        try:
            uc.emu_start(self.reg("rip"), 1 << 63, 0, 1)
        except UcError as e:
            err = e
        finally:
            self._rc.clear()
            self._mode_stale = True
            dec.hook = self._add_stop_hook(addr)
        if self._pending is not None:
            return self._handle_pending()
        if err is not None:
            raise KvmSimBug(f"unicorn stopped with {err} stepping {dec.mnemonic} at {addr:#x}")
        return False

    def _passthrough_msr(self, write: bool, ecx: int) -> None:
        """The MSR bitmap lets the guest touch this MSR directly: the CPU's own RDMSR/WRMSR."""
        if write:
            self.uc.msr_write(ecx, (self.reg("rdx") & 0xFFFF_FFFF) << 32 | (self.reg("rax") & 0xFFFF_FFFF))
        else:
            val = self.uc.msr_read(ecx)
            self.set_reg("rax", val & 0xFFFF_FFFF)
            self.set_reg("rdx", val >> 32)

    def _default_op32(self) -> bool:
        mode = self.mode()
        return mode in ("prot32", "long64", "compat")

    def _handle_pending(self) -> bool:
        kind, *args = self._pending
        self._pending = None
        if kind == "mem":
            access, addr, size = args
            return self._ept_exit(access, addr)
        if kind == "intr":
            quirks.reset_old_exception(self.uc)
            return self._exception(args[0], None)
        raise KvmSimBug(f"unknown pending event {kind}")

    def _ept_exit(self, access: int, linear: int) -> bool:
        """No memslot behind the access: EPT violation, or misconfig once KVM cached an MMIO SPTE."""
        fetch = access == UC_MEM_FETCH_UNMAPPED
        write = access == UC_MEM_WRITE_UNMAPPED
        try:
            gpa = self.translate(linear, write=write, fetch=fetch)
        except paging.PageFault:
            gpa = linear  # unicorn reported a physical address
        if (gpa >> 12) in self.ept_mmio_gfns:
            return self._exit(ExitReason.EPT_MISCONFIG, 0, self._insn_len(), gpa=gpa)
        q = (EPT_VIOLATION_ACC_INSTR if fetch else EPT_VIOLATION_ACC_WRITE if write else EPT_VIOLATION_ACC_READ)
        q |= EPT_VIOLATION_GVA_IS_VALID | EPT_VIOLATION_GVA_TRANSLATED
        return self._exit(ExitReason.EPT_VIOLATION, q, self._insn_len(), gpa=gpa, gla=linear)

    def _insn_len(self) -> int:
        """VM_EXIT_INSTRUCTION_LEN (hardware reports it on EPT misconfig in practice); cached per
        address like the scanner's decode (invalidate_code forgets it)."""
        rip = self.linear_rip()
        n = self._len_cache.get(rip)
        if n is None:
            try:
                code = self.read_linear_bytes(rip, 15)
            except (paging.PageFault, UcError):
                return 0
            insn = next(self._disasm(code, 0), None)
            n = self._len_cache[rip] = insn.size if insn is not None else 0
        return n

    def _exception(self, vector: int, error_code: int | None) -> bool:
        """A fault the guest raised natively: exit if KVM intercepts the vector, else deliver it."""
        if vector in self.exception_bitmap:
            has = vector in EXCEPTIONS_WITH_ERROR_CODE
            return self._exit(ExitReason.EXCEPTION_NMI, 0, self._insn_len(),
                              intr=intr_info(vector, IntrType.HARD_EXCEPTION, has), err=error_code or 0)
        self.native_exceptions += 1
        code = (error_code or 0) if vector in EXCEPTIONS_WITH_ERROR_CODE else None
        cr2 = self.cr(2) if vector == Vector.PF else None
        return self._deliver(vector, IntrType.HARD_EXCEPTION, code, cr2=cr2, inst_len=0)

    def _deliver(self, vector: int, itype: IntrType, error_code: int | None, cr2: int | None,
                 inst_len: int) -> bool:
        """Deliver an event; True when that ended in a triple-fault VM exit."""
        if itype == IntrType.NMI_INTR:
            self.vmcs.guest_interruptibility_info |= GUEST_INTR_STATE_NMI   # blocked until IRET
        next_rip = self.reg("rip") + inst_len if inst_len else None
        try:
            event.deliver(self, vector, itype, error_code, next_rip=next_rip, cr2=cr2)
        except event.TripleFault:
            return self._exit(ExitReason.TRIPLE_FAULT)
        return False

    # ------------------------------------------------------------ unicorn hooks (record only)

    def _on_unmapped_raw(self, uch: object, access: int, addr: int, size: int, value: int, _: object) -> bool:
        self._pending = ("mem", access, addr, size)
        return False

    def _add_stop_hook(self, addr: int) -> uc_hook_h:
        """A code hook on exactly `addr` whose callback is uc_emu_stop itself: the CPU stops before
        the instruction with no Python on the way (the hook's extra arguments are ignored by the
        callee under the SysV calling convention; its first one is the engine, as uc_emu_stop wants)."""
        h = uc_hook_h()
        status = uclib.uc_hook_add(self._uch, ctypes.byref(h), UC_HOOK_CODE, _UC_EMU_STOP, None,
                                   ctypes.c_uint64(addr), ctypes.c_uint64(addr))
        if status:
            raise UcError(status)
        return h

    def _del_stop_hook(self, h: uc_hook_h) -> None:
        uclib.uc_hook_del(self._uch, h)

    def _on_intr(self, uc: Uc, intno: int, _: object) -> None:
        self._pending = ("intr", intno)
        uc.emu_stop()

    def _on_new_block(self, uc: Uc, addr: int, size: int, _: object) -> None:
        """First execution of code not scanned yet: find its exiting instructions, then retranslate."""
        code = bytes(uc.mem_read(addr, size)) if size else b""
        for insn in self._disasm(code, addr):
            spec = EXITING_INSNS.get(insn.id)
            if spec is not None and insn.address not in self._exits:
                # A code hook on exactly this address stops the CPU before the instruction runs.
                hook = self._add_stop_hook(insn.address)
                self._exits[insn.address] = _Decoded(spec, insn.size, bytes(insn.bytes), insn.mnemonic,
                                                     self._cs_mode(), hook=hook)
        self._mark_scanned(addr, addr + max(size, 1))
        uc.ctl_remove_cache(addr, addr + max(size, 1))
        self._rescan = True
        uc.emu_stop()

    # ------------------------------------------------------------ scanner bookkeeping

    def _cs_mode(self) -> int:
        return {"real": CS_MODE_16, "vm86": CS_MODE_16, "prot16": CS_MODE_16,
                "long64": CS_MODE_64}.get(self.mode(), CS_MODE_32)

    def _disasm(self, code: bytes, addr: int):
        mode = self._cs_mode()
        md = self._cs.get(mode)
        if md is None:
            md = self._cs[mode] = Cs(CS_ARCH_X86, mode)
            md.detail = False
        return md.disasm(code, addr)

    def _mark_scanned(self, start: int, end: int) -> None:
        spans = sorted(self._scanned + [(start, end)])
        merged: list[tuple[int, int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
            else:
                merged.append((s, e))
        self._scanned = merged
        gaps, cur = [], 0
        for s, e in merged:
            if s > cur:
                gaps.append((cur, s - 1))
            cur = e
        if cur <= (1 << 64) - 1:
            gaps.append((cur, (1 << 64) - 1))
        self._set_scan_hooks(gaps)

    def _set_scan_hooks(self, gaps: list[tuple[int, int]]) -> None:
        want = set(gaps)
        for span in list(self._scan_hooks):
            if span not in want:
                self.uc.hook_del(self._scan_hooks.pop(span))
        for span in gaps:
            if span not in self._scan_hooks:
                self._scan_hooks[span] = self.uc.hook_add(UC_HOOK_BLOCK, self._on_new_block, None, *span)

    def invalidate_code(self, linear: int, length: int) -> None:
        """Guest code changed under us (KVM patched an instruction): forget its scan and translation."""
        end = linear + length
        for addr in [a for a in self._len_cache if linear - 15 < a < end]:
            del self._len_cache[addr]
        for addr in [a for a in self._exits if linear - 15 < a < end]:
            dec = self._exits.pop(addr)
            if self.uc is not None and dec.hook:
                self._del_stop_hook(dec.hook)
        kept = []
        for s, e in self._scanned:
            if e <= linear - 15 or s >= end:
                kept.append((s, e))
        self._scanned = kept
        if self.uc is not None:
            self.uc.ctl_remove_cache(max(0, linear - 4096), end + 4096)
            self._mark_scanned(0, 0)

    def request_stop(self) -> None:
        """A signal to the vCPU thread: kick the guest out (like an IPI), from any thread."""
        self.kick_pending = True
        if self.uc is not None:
            self.uc.emu_stop()


def _copy_seg(seg: KvmSegment) -> KvmSegment:
    new = KvmSegment()
    ctypes.memmove(ctypes.addressof(new), ctypes.addressof(seg), ctypes.sizeof(KvmSegment))
    return new
