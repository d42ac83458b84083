"""Model of x86.c's `emulate_ops`: the emulator's callbacks backed by the vCPU, guest RAM and the I/O buses.

Includes the MMIO half of the round trip (reference §7.3): emulator_read_write splits
an access at page boundaries, satisfies what it can from RAM and in-kernel devices,
and records the rest as `mmio_fragments` for KVM_EXIT_MMIO.
"""

from __future__ import annotations

import ctypes

from unicorn import UcError
from unicorn import x86_const as U

from kvmsim.errors import KvmSimBug
from kvmsim.hw import paging
from kvmsim.hw.apicdef import APIC_DEFAULT_PHYS_BASE
from kvmsim.kvm import cpuid, dirty_log, mmu_shadow, msr, pio
from kvmsim.kvm import cr as crs
from kvmsim.kvm.emulate.codes import (GPR_NAMES, X86EMUL_CMPXCHG_FAILED, X86EMUL_CONTINUE, X86EMUL_IO_NEEDED,
                                      X86EMUL_MODE_PROT64, X86EMUL_PROPAGATE_FAULT, X86EMUL_UNHANDLEABLE)
from kvmsim.kvm.emulate.flags import String, TwoMemOp
from kvmsim.kvm.emulate.ops import DescPtr, DescStruct, X86Exception, as_bytes
from kvmsim.kvm.kvm_x86_ops import kvm_x86_ops
from kvmsim.kvm.vcpu import KVM_MAX_MMIO_FRAGMENTS, KvmVcpu
from kvmsim.probe import PROBES, tracepoint
from kvmsim.uapi import KvmExit, KvmSegment

PAGE_SIZE = 4096
_SREGS = ("es", "cs", "ss", "ds", "fs", "gs", "tr", "ldt")


def _trace_mmio(kind: int, length: int, gpa: int, val: bytes) -> None:
    v = int.from_bytes(bytes(val[:8]), "little")
    tracepoint("kvm_mmio", type=kind, len=length, gpa=gpa, val=v)


_string_at = ctypes.string_at
_GPR_NAMES = tuple(GPR_NAMES)
_CRS = frozenset((0, 2, 3, 4, 8))
_KVM_EXIT_MMIO = int(KvmExit.MMIO)


def kvm_page_track_write(vcpu: KvmVcpu, gpa: int, new: bytes) -> None:
    """emulator_write_phys → kvm_page_track_write: a write to a write-tracked gfn reaches the shadow MMU."""
    if (gpa >> 12) in vcpu.hw.spt_write_protected:
        mmu_shadow.kvm_mmu_track_write(vcpu, gpa, new)


def run_mmio(vcpu: KvmVcpu):
    """(vcpu->run->mmio, its data as bytes), bound once per vCPU (each `run.mmio` builds two ctypes views)."""
    ctxt = vcpu.arch.emulate_ctxt
    if ctxt is not None:
        ops = ctxt.ops
        if ops.__class__ is VcpuEmulateOps:
            return ops.run_mmio, ops.run_mmio_data
    mmio = vcpu.run.mmio
    return mmio, memoryview(mmio.data).cast("B")


class VcpuEmulateOps:
    """struct x86_emulate_ops as x86.c wires it (emulator_* functions)."""

    def __init__(self, vcpu: KvmVcpu) -> None:
        self.vcpu = vcpu
        self.hw = vcpu.hw
        self.run_mmio = vcpu.run.mmio   # run->mmio, bound once (a ctypes sub-structure view)
        self.run_mmio_data = memoryview(self.run_mmio.data).cast("B")
        # memslot (gpa, size, host) -> a byte view of its host memory, made on first use; only
        # used while that memslot is in hw.memslots (so the host memory is mapped).
        self._slot_views: dict[tuple[int, int, int], memoryview] = {}

    def _slot_view(self, slot: tuple[int, int, int]) -> memoryview:
        v = self._slot_views[slot] = memoryview((ctypes.c_char * slot[1]).from_address(slot[2])).cast("B")
        return v

    # ------------------------------------------------------------ registers
    def vm_bugged(self, ctxt) -> None:
        raise KvmSimBug("KVM_EMULATOR_BUG_ON")

    def read_gpr(self, ctxt, reg: int) -> int:
        hw = self.hw
        name = _GPR_NAMES[reg]
        v = hw._rc.get(name)      # hw.reg, inlined: its cached value, else the call (registers.py)
        return hw.reg(name) if v is None else v

    def write_gpr(self, ctxt, reg: int, val: int) -> None:
        self.hw.set_reg(_GPR_NAMES[reg], val)

    # ------------------------------------------------------------ guest memory (linear)
    def _gva_to_gpa(self, addr: int, write: bool, fetch: bool, fault: X86Exception | None, system: bool) -> int | None:
        hw = self.hw
        try:
            return hw.walk(addr, write, not system and hw.cpl() == 3, fetch)
        except paging.PageFault as pf:
            if fault is not None:
                fault.vector, fault.error_code_valid = 14, True
                fault.error_code, fault.address = pf.error_code, addr
                fault.nested_page_fault = False
            return None

    def _std(self, addr: int, val, n: int, fault, system: bool, write: bool, fetch: bool = False) -> int:
        """kvm_read/write_guest_virt_helper: page by page, RAM only (MMIO here is IO_NEEDED)."""
        hw = self.hw
        done = 0
        while done < n:
            chunk = min(n - done, PAGE_SIZE - ((addr + done) & 0xFFF))
            gpa = self._gva_to_gpa(addr + done, write, fetch, fault, system)
            if gpa is None:
                return X86EMUL_PROPAGATE_FAULT
            slot = hw.memslot_at(gpa)                    # gpa_is_ram and _host in one lookup
            if slot is None:
                return X86EMUL_IO_NEEDED
            g, sz, host = slot
            host = host + gpa - g if gpa + chunk <= g + sz else hw._host(gpa, chunk)
            if write and hw.readonly_slots and hw.gpa_is_readonly(gpa):
                return X86EMUL_IO_NEEDED     # kvm_vcpu_write_guest fails on a KVM_MEM_READONLY slot
            if write:
                ctypes.memmove(host, bytes(val[done:done + chunk]), chunk)
                hw.code_written(gpa, chunk)
                if hw.spt_write_protected:
                    kvm_page_track_write(self.vcpu, gpa, bytes(val[done:done + chunk]))
            else:
                val[done:done + chunk] = _string_at(host, chunk)
            done += chunk
        return X86EMUL_CONTINUE

    def read_std(self, ctxt, addr, val, bytes, fault, system) -> int:
        return self._std(addr, val, bytes, fault, system, False)

    def write_std(self, ctxt, addr, val, bytes, fault, system) -> int:
        return self._std(addr, val, bytes, fault, system, True)

    def fetch(self, ctxt, addr, val, bytes, fault) -> int:
        """kvm_fetch_guest_virt: one page at most (so one translation)."""
        n = PAGE_SIZE - (addr & 0xFFF)
        if bytes < n:
            n = bytes
        if n <= 0:
            return X86EMUL_CONTINUE
        hw = self.hw
        try:                                  # _gva_to_gpa(addr, fetch), inlined: once per emulated instruction
            gpa = hw.walk(addr, False, hw.cpl() == 3, True)
        except paging.PageFault as pf:
            fault.vector, fault.error_code_valid = 14, True
            fault.error_code, fault.address = pf.error_code, addr
            fault.nested_page_fault = False
            return X86EMUL_PROPAGATE_FAULT
        slot = hw.memslot_at(gpa)
        if slot is None:
            return X86EMUL_IO_NEEDED
        g, sz, host = slot
        if gpa + n <= g + sz:
            view = self._slot_views.get(slot) or self._slot_view(slot)
            off = gpa - g
            val[:n] = view[off:off + n]
        else:
            val[:n] = _string_at(hw._host(gpa, n), n)
        return X86EMUL_CONTINUE

    # ------------------------------------------------------------ MMIO-capable accesses
    def read_emulated(self, ctxt, addr, val, bytes, fault) -> int:
        return emulator_read_write(self.vcpu, ctxt, addr, val, bytes, fault, False)

    def write_emulated(self, ctxt, addr, val, bytes, fault) -> int:
        return emulator_read_write(self.vcpu, ctxt, addr, memoryview(bytearray(val)), bytes, fault, True)

    def cmpxchg_emulated(self, ctxt, addr, old, new, bytes, fault) -> int:
        """Atomic on RAM; MMIO, odd sizes and page splits fall back to a plain write (emul_write)."""
        if bytes in (1, 2, 4, 8, 16) and (addr & 0xFFF) + bytes <= PAGE_SIZE:
            gpa = self._gva_to_gpa(addr, True, False, fault, False)
            if gpa is None:
                return X86EMUL_PROPAGATE_FAULT
            if self.hw.gpa_is_ram(gpa) and not self.hw.gpa_is_readonly(gpa):
                cur = self.hw.uc.mem_read(gpa, bytes)
                if as_bytes(cur) != as_bytes(old)[:bytes]:
                    return X86EMUL_CMPXCHG_FAILED
                self.hw.uc.mem_write(gpa, as_bytes(new)[:bytes])
                self.hw.code_written(gpa, bytes)
                if self.hw.spt_write_protected:
                    kvm_page_track_write(self.vcpu, gpa, as_bytes(new)[:bytes])
                return X86EMUL_CONTINUE
        return self.write_emulated(ctxt, addr, new, bytes, fault)

    def invlpg(self, ctxt, addr: int) -> None:
        """emulator_invlpg → kvm_mmu_invlpg; with EPT there are no shadow entries to drop."""
        if not self.vcpu.kvm.params.enable_ept:
            mmu_shadow.kvm_mmu_invlpg(self.vcpu, addr)

    # ------------------------------------------------------------ port I/O
    def pio_in_emulated(self, ctxt, size, port, val, count) -> int:
        """emulator_pio_in_emulated: a pending pio.count is the re-entry after userspace."""
        vcpu = self.vcpu
        buf = bytearray(size * count)
        if vcpu.arch.pio.count:
            pio.complete_emulator_pio_in(vcpu, buf)
            val[:len(buf)] = buf
            return 1
        r = pio.emulator_pio_in(vcpu, size, port, buf, count)
        if r:
            val[:len(buf)] = buf
        return r

    def pio_out_emulated(self, ctxt, size, port, val, count) -> int:
        return pio.emulator_pio_out(self.vcpu, size, port, bytearray(bytes(val)), count)

    # ------------------------------------------------------------ segments and tables
    def get_segment(self, ctxt, seg: int):
        s = self.hw.segment(_SREGS[seg])
        if s.unusable:
            return None
        limit = s.limit >> 12 if s.g else s.limit
        d = DescStruct(base=s.base & 0xFFFF_FFFF, limit=limit, type=s.type, s=s.s, dpl=s.dpl, p=s.present,
                       avl=s.avl, l=s.l, d=s.db, g=s.g)
        return s.selector, d, s.base >> 32

    def set_segment(self, ctxt, selector, desc, base3, seg) -> None:
        """emulator_set_segment: the descriptor the emulator loaded becomes the cache (kvm_set_segment)."""
        self.hw.set_segment(_SREGS[seg], KvmSegment(
            base=desc.base | (base3 << 32), limit=desc.limit_scaled(), selector=selector, type=desc.type,
            present=desc.p, dpl=desc.dpl, db=desc.d, s=desc.s, l=desc.l, g=desc.g, avl=desc.avl,
            unusable=0 if desc.p else 1))

    def get_cached_segment_base(self, ctxt, seg: int) -> int:
        return self.hw.seg_base(_SREGS[seg])

    def get_gdt(self, ctxt) -> DescPtr:
        _, base, limit, _ = self.hw.uc.reg_read(U.UC_X86_REG_GDTR)
        return DescPtr(limit, base)

    def get_idt(self, ctxt) -> DescPtr:
        base, limit = self.hw.idtr()
        return DescPtr(limit, base)

    def set_gdt(self, ctxt, dt: DescPtr) -> None:
        self.hw.uc.reg_write(U.UC_X86_REG_GDTR, (0, dt.address, dt.size, 0))

    def set_idt(self, ctxt, dt: DescPtr) -> None:
        self.hw.uc.reg_write(U.UC_X86_REG_IDTR, (0, dt.address, dt.size, 0))

    def get_cr(self, ctxt, cr: int) -> int:
        """emulator_get_cr: CR0/CR4 as KVM reads them (read shadows), CR8 from arch.cr8."""
        vcpu = self.vcpu
        if cr == 4:   # kvm_read_cr4, inlined: guest-owned bits from the CPU, the rest from the read shadow
            hw = self.hw
            v = hw._rc.get(4)
            owned = vcpu.arch.cr4_guest_owned_bits
            return ((hw.cr(4) if v is None else v) & owned) | (hw.vmcs.cr4_read_shadow & ~owned)
        if cr == 0:
            return crs.kvm_read_cr0(vcpu)
        if cr == 8:
            return crs.kvm_get_cr8(vcpu)
        return self.hw.cr(cr) if cr in _CRS else 0

    def set_cr(self, ctxt, cr: int, val: int) -> int:
        """emulator_set_cr: through kvm_set_crN and its checks (1: #GP); CR0/CR4 keep bits 63:32."""
        vcpu = self.vcpu
        if cr == 0:
            return crs.kvm_set_cr0(vcpu, (crs.kvm_read_cr0(vcpu) & ~0xFFFF_FFFF) | val)
        if cr == 2:
            self.hw.set_cr2(val)
            return 0
        if cr == 3:
            return crs.kvm_set_cr3(vcpu, val)
        if cr == 4:
            return crs.kvm_set_cr4(vcpu, (crs.kvm_read_cr4(vcpu) & ~0xFFFF_FFFF) | val)
        if cr == 8:
            return crs.kvm_set_cr8(vcpu, val)
        return -1

    def cpl(self, ctxt) -> int:
        return self.hw.cpl()

    def get_dr(self, ctxt, dr: int) -> int:
        return crs.kvm_get_dr(self.vcpu, dr)

    def set_dr(self, ctxt, dr: int, value: int) -> int:
        return crs.kvm_set_dr(self.vcpu, dr, value)

    # ------------------------------------------------------------ MSRs, PMCs, misc
    def get_msr_with_filter(self, ctxt, msr_index: int) -> tuple[int, int]:
        r, data = msr.kvm_get_msr(self.vcpu, msr_index)
        if r == 0:
            return X86EMUL_CONTINUE, data
        if msr.kvm_msr_user_space(self.vcpu, msr_index, KvmExit.X86_RDMSR, 0, complete_emulated_rdmsr, r):
            return X86EMUL_IO_NEEDED, 0
        return X86EMUL_PROPAGATE_FAULT, 0

    def set_msr_with_filter(self, ctxt, msr_index: int, data: int) -> int:
        r = msr.kvm_set_msr(self.vcpu, msr_index, data)
        if r == 0:
            return X86EMUL_CONTINUE
        if msr.kvm_msr_user_space(self.vcpu, msr_index, KvmExit.X86_WRMSR, data, complete_emulated_msr_access, r):
            return X86EMUL_IO_NEEDED
        return X86EMUL_PROPAGATE_FAULT

    def get_msr(self, ctxt, msr_index: int) -> tuple[int, int]:
        return msr.kvm_get_msr(self.vcpu, msr_index)

    def check_rdpmc_early(self, ctxt, pmc: int) -> int:
        return 1  # Simplified: no vPMU, so every counter index is invalid (#GP), as with PMU disabled.

    def read_pmc(self, ctxt, pmc: int) -> tuple[int, int]:
        return 1, 0

    def halt(self, ctxt) -> None:
        self.vcpu.arch.halt_request = True

    def wbinvd(self, ctxt) -> None:
        pass

    def fix_hypercall(self, ctxt) -> int:
        """KVM_X86_QUIRK_FIX_HYPERCALL_INSN: patch in VMCALL (Intel) and let the CPU re-execute it."""
        rip = self.hw.linear_rip()
        fault = X86Exception()
        rc = self._std(rip, memoryview(bytearray(b"\x0f\x01\xc1")), 3, fault, True, True)
        if rc == X86EMUL_CONTINUE:
            self.hw.invalidate_code(rip, 3)
        return rc

    def intercept(self, ctxt, info, stage) -> int:
        return X86EMUL_CONTINUE

    def get_cpuid(self, ctxt, eax: int, ecx: int, exact_only: bool) -> tuple[int, int, int, int]:
        return cpuid.kvm_cpuid(self.vcpu, eax, ecx)

    def _cpuid_bit(self, leaf: int, reg: int, bit: int) -> bool:
        return bool(cpuid.kvm_cpuid(self.vcpu, leaf, 0)[reg] >> bit & 1)

    def guest_has_movbe(self, ctxt) -> bool:
        return self._cpuid_bit(1, 2, 22)

    def guest_has_fxsr(self, ctxt) -> bool:
        return self._cpuid_bit(1, 3, 24)

    def guest_has_rdpid(self, ctxt) -> bool:
        return self._cpuid_bit(7, 2, 22)

    def guest_cpuid_is_intel_compatible(self, ctxt) -> bool:
        return cpuid.guest_cpuid_is_intel_compatible(self.vcpu)

    def set_nmi_mask(self, ctxt, masked: bool) -> None:
        kvm_x86_ops.set_nmi_mask(self.vcpu, masked)

    def is_smm(self, ctxt) -> bool:
        return False

    def is_guest_mode(self, ctxt) -> bool:
        return False

    def leave_smm(self, ctxt) -> int:
        return X86EMUL_UNHANDLEABLE

    def triple_fault(self, ctxt) -> None:
        self.vcpu.requests.add("KVM_REQ_TRIPLE_FAULT")

    def set_xcr(self, ctxt, index: int, xcr: int) -> int:
        if not (index == 0 and xcr & 1 and not xcr & ~7):
            return 1
        self.vcpu.arch.msrs["xcr0"] = xcr   # as kvm_emulate_xsetbv: KVM's XCR0, loaded on the silicon
        self.vcpu.hw.set_xcr0(xcr)
        return 0

    def get_untagged_addr(self, ctxt, addr: int, flags: int) -> int:
        return addr

    def is_canonical_addr(self, ctxt, addr: int, flags: int) -> bool:
        return (addr >> 47) in (0, 0x1FFFF)

    # ------------------------------------------------------------ vector/x87 state
    def read_sse_reg(self, ctxt, reg: int) -> bytes:
        return self.hw.uc.reg_read(U.UC_X86_REG_XMM0 + reg).to_bytes(16, "little")

    def write_sse_reg(self, ctxt, reg: int, data: bytes) -> None:
        self.hw.uc.reg_write(U.UC_X86_REG_XMM0 + reg, int.from_bytes(bytes(data[:16]), "little"))

    def read_avx_reg(self, ctxt, reg: int) -> bytes:
        return self.hw.uc.reg_read(U.UC_X86_REG_YMM0 + reg).to_bytes(32, "little")

    def write_avx_reg(self, ctxt, reg: int, data: bytes) -> None:
        self.hw.uc.reg_write(U.UC_X86_REG_YMM0 + reg, int.from_bytes(bytes(data[:32]), "little"))

    # MMn is the mantissa of x87 physical register n (unicorn FPn = (mantissa, exponent));
    # an MMX write sets the exponent to all ones, as the CPU does.  (UC_X86_REG_MMn reads 0.)
    def read_mmx_reg(self, ctxt, reg: int) -> int:
        return self.hw.uc.reg_read(U.UC_X86_REG_FP0 + reg)[0] & ((1 << 64) - 1)

    def write_mmx_reg(self, ctxt, reg: int, val: int) -> None:
        self.hw.uc.reg_write(U.UC_X86_REG_FP0 + reg, (val & ((1 << 64) - 1), 0xFFFF))

    def fpu_fninit(self, ctxt) -> None:
        self.hw.uc.reg_write(U.UC_X86_REG_FPCW, 0x37F)
        self.hw.uc.reg_write(U.UC_X86_REG_FPSW, 0)

    def fpu_fnstcw(self, ctxt) -> int:
        return self.hw.uc.reg_read(U.UC_X86_REG_FPCW)

    def fpu_fnstsw(self, ctxt) -> int:
        return self.hw.uc.reg_read(U.UC_X86_REG_FPSW)

    def fpu_fxsave(self, ctxt) -> bytes:
        img = bytearray(512)
        img[0:2] = self.fpu_fnstcw(ctxt).to_bytes(2, "little")
        img[2:4] = self.fpu_fnstsw(ctxt).to_bytes(2, "little")
        img[24:28] = (self.hw.uc.reg_read(U.UC_X86_REG_MXCSR) & 0xFFFF_FFFF).to_bytes(4, "little")
        for i in range(16 if ctxt.mode == X86EMUL_MODE_PROT64 else 8):
            img[160 + 16 * i:176 + 16 * i] = self.read_sse_reg(ctxt, i)
        return bytes(img)

    def fpu_fxrstor(self, ctxt, image: bytes) -> int:
        self.hw.uc.reg_write(U.UC_X86_REG_FPCW, int.from_bytes(image[0:2], "little"))
        self.hw.uc.reg_write(U.UC_X86_REG_MXCSR, int.from_bytes(image[24:28], "little"))
        for i in range(16 if ctxt.mode == X86EMUL_MODE_PROT64 else 8):
            self.write_sse_reg(ctxt, i, image[160 + 16 * i:176 + 16 * i])
        return X86EMUL_CONTINUE



def complete_emulated_rdmsr(vcpu: KvmVcpu) -> int:
    """Emulated RDMSR answered by userspace: write EDX:EAX, then finish like the fast path."""
    return msr.complete_fast_rdmsr(vcpu)


def complete_emulated_msr_access(vcpu: KvmVcpu) -> int:
    return msr.complete_fast_msr_access(vcpu)


# ---------------------------------------------------------------- emulator_read_write (§7.3)

def vcpu_is_mmio_gpa(vcpu: KvmVcpu, gpa: int) -> bool:
    """The APIC page, or a GPA with no memslot.  Simplified: the kernel's MMIO-SPTE cache match
    (vcpu_match_mmio_gpa) and its failed RAM access are both "no memslot" here."""
    return (gpa & ~0xFFF) == APIC_DEFAULT_PHYS_BASE or vcpu.hw.memslot_at(gpa) is None


def emulator_can_use_gpa(ctxt) -> bool:
    """A REP string or a two-memory-operand instruction may fault on a different address."""
    return not (ctxt.rep_prefix and ctxt.d & String) and not ctxt.d & TwoMemOp


def vcpu_mmio_rw(vcpu: KvmVcpu, gpa: int, n: int, val, write: bool) -> int:
    """vcpu_mmio_read/write: ≤8-byte pieces to KVM_MMIO_BUS until one is not taken; bytes handled."""
    bus = vcpu.kvm.buses["KVM_MMIO_BUS"]
    if not bus.ranges:
        return 0   # no in-kernel MMIO device: nobody takes the first piece
    handled = 0
    while handled < n:
        k = min(8, n - handled)
        if write:
            if bus.write(gpa + handled, k, bytes(val[handled:handled + k])) != 0:
                break
        else:
            buf = bytearray(k)
            if bus.read(gpa + handled, k, buf) != 0:
                break
            val[handled:handled + k] = buf
            if PROBES.enabled:
                _trace_mmio(1, k, gpa + handled, buf)
        handled += k
    return handled


def emulator_read_write_onepage(vcpu: KvmVcpu, ctxt, addr: int, val, n: int, fault, write: bool) -> int:
    hw = vcpu.hw
    # emulator_can_use_gpa, inlined: no REP string, no two-memory-operand instruction.
    if (ctxt.gpa_available and not (ctxt.rep_prefix and ctxt.d & String) and not ctxt.d & TwoMemOp
            and (addr & 0xFFF) == (ctxt.gpa_val & 0xFFF)):
        gpa = ctxt.gpa_val
    else:
        try:
            gpa = hw.walk(addr, write, hw.cpl() == 3, False)
        except paging.PageFault as pf:
            fault.vector, fault.error_code_valid, fault.error_code, fault.address = 14, True, pf.error_code, addr
            return X86EMUL_PROPAGATE_FAULT
    # vcpu_is_mmio_gpa, inlined (with memslot_at, inlined): the APIC page, or no memslot.
    if (gpa & ~0xFFF) == APIC_DEFAULT_PHYS_BASE:
        is_mmio = True
    else:
        slot = hw._last_slot
        if slot is not None and slot[0] <= gpa < slot[0] + slot[1]:
            is_mmio = False
        else:
            for slot in hw._slot_list:
                if slot[0] <= gpa < slot[0] + slot[1]:
                    hw._last_slot = slot
                    is_mmio = False
                    break
            else:
                is_mmio = True
    if write and not is_mmio and hw.readonly_slots and hw.gpa_is_readonly(gpa):
        is_mmio = True    # emulator_write_phys fails on a KVM_MEM_READONLY slot: the write is MMIO
    if not is_mmio:
        try:
            if write:
                hw.uc.mem_write(gpa, bytes(val[:n]))
                hw.code_written(gpa, n)
                if hw.spt_write_protected:
                    kvm_page_track_write(vcpu, gpa, bytes(val[:n]))
                if vcpu.kvm.dirty_log_slots:               # kvm_vcpu_write_guest → mark_page_dirty_in_slot
                    dirty_log.kvm_vcpu_mark_page_dirty(vcpu, gpa >> 12)
            else:
                val[:n] = hw.uc.mem_read(gpa, n)
            return X86EMUL_CONTINUE
        except UcError:
            pass
    if write and PROBES.enabled:
        _trace_mmio(2, n, gpa, bytes(val[:n]))
    handled = vcpu_mmio_rw(vcpu, gpa, n, val, write) if vcpu.kvm.buses["KVM_MMIO_BUS"].ranges else 0
    if handled == n:
        return X86EMUL_CONTINUE
    # frag->data = val + handled: a view into the emulator's read cache slot (or the write's copy).
    nr = vcpu.mmio_nr_fragments
    if nr >= KVM_MAX_MMIO_FRAGMENTS:   # the kernel's WARN_ON: an access spans at most two pages
        raise KvmSimBug(f"MMIO access at {gpa:#x} needs more than {KVM_MAX_MMIO_FRAGMENTS} fragments")
    frag = vcpu.mmio_fragments[nr]
    frag.gpa, frag.data, frag.offset, frag.len = gpa + handled, val, handled, n - handled
    vcpu.mmio_nr_fragments = nr + 1
    return X86EMUL_CONTINUE


def emulator_read_write(vcpu: KvmVcpu, ctxt, addr: int, val, n: int, fault, write: bool) -> int:
    """read_emultor / write_emultor through one function (reference §7.3 steps)."""
    if not write and vcpu.mmio_read_completed:                              # 1: read_prepare
        if PROBES.enabled and vcpu.mmio_nr_fragments:
            _trace_mmio(1, n, vcpu.mmio_fragments[0].gpa, bytes(val[:n]))
        vcpu.mmio_read_completed = False
        return X86EMUL_CONTINUE
    vcpu.mmio_nr_fragments = 0                                              # 2
    if (addr & 0xFFF) + n > PAGE_SIZE:                                      # 3
        now = -addr & 0xFFF
        rc = emulator_read_write_onepage(vcpu, ctxt, addr, val[:now], now, fault, write)
        if rc != X86EMUL_CONTINUE:
            return rc
        addr += now
        if ctxt.mode != X86EMUL_MODE_PROT64:
            addr &= 0xFFFF_FFFF
        val, n = val[now:], n - now
    rc = emulator_read_write_onepage(vcpu, ctxt, addr, val, n, fault, write)  # 4
    if rc != X86EMUL_CONTINUE:
        return rc
    if not vcpu.mmio_nr_fragments:                                          # 5
        return rc
    frag = vcpu.mmio_fragments[0]                                           # 6
    mmio = ctxt.ops.run_mmio if ctxt.ops.__class__ is VcpuEmulateOps else vcpu.run.mmio   # run_mmio, inlined
    vcpu.mmio_needed = True
    vcpu.mmio_cur_fragment = 0
    flen = frag.len
    mmio.len = n = 8 if flen > 8 else flen
    mmio.is_write = 1 if write else 0
    vcpu.mmio_is_write = write
    vcpu.run.exit_reason = _KVM_EXIT_MMIO
    mmio.phys_addr = frag.gpa
    if write:                                                               # write_exit_mmio
        data = mmio.data
        for i, b in enumerate(frag.data[frag.offset:frag.offset + n]):
            data[i] = b
        return X86EMUL_CONTINUE
    if PROBES.enabled:                                                      # read_exit_mmio
        _trace_mmio(0, frag.len, frag.gpa, b"")
    return X86EMUL_IO_NEEDED
