"""A flat-RAM X86EmulateOps, so the emulator runs alone (Xen x86_emulator harness style).

Not a model of kernel code: it stands in for x86.c's `emulate_ops` in tests, the
benchmark and the census. Memory is one bytearray; segments are flat for the chosen
mode; port I/O and MMIO can be scripted, and every device access is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .codes import (EFER_LMA, EFER_LME, EFER_SCE, EMULATION_OK, EMULATION_RESTART,
                    MSR_EFER, PF_VECTOR, VCPU_SREG_CS, VCPU_SREG_TR, X86_CR4_OSFXSR,
                    X86_CR4_OSXSAVE, X86EMUL_CONTINUE, X86EMUL_IO_NEEDED, X86EMUL_MODE_PROT16,
                    X86EMUL_MODE_PROT32, X86EMUL_MODE_PROT64, X86EMUL_MODE_REAL,
                    X86EMUL_PROPAGATE_FAULT)
from .ctxt import X86EmulateCtxt, EmulatorFeatures, init_decode_cache
from .decode import x86_decode_insn
from .emulate import x86_emulate_insn
from .ops import DescPtr, DescStruct, SegmentState, X86Exception, as_bytes

MODES = {"real16": X86EMUL_MODE_REAL, "prot16": X86EMUL_MODE_PROT16,
         "prot32": X86EMUL_MODE_PROT32, "long64": X86EMUL_MODE_PROT64}


def flat_segments(mode: str) -> dict[int, SegmentState]:
    """ES..GS, TR, LDTR as a flat guest of the given mode would have them."""
    segs = {}
    for seg in range(6):
        if mode == "real16":
            d = DescStruct(base=0, limit=0xFFFF, type=0xB if seg == VCPU_SREG_CS else 3)
        else:
            d = DescStruct(base=0, limit=0xFFFFF, g=1, type=0xB if seg == VCPU_SREG_CS else 3,
                           d=0 if mode == "prot16" or (mode == "long64" and seg == VCPU_SREG_CS)
                           else 1, l=1 if mode == "long64" and seg == VCPU_SREG_CS else 0)
            if mode == "prot16":
                d.g, d.limit = 0, 0xFFFF
        segs[seg] = SegmentState(0, d)
    segs[VCPU_SREG_TR] = SegmentState(0, DescStruct(type=0xB, s=0, limit=0x67, p=1))
    segs[7] = SegmentState(0, DescStruct(type=2, s=0, limit=0, p=0))
    return segs


@dataclass
class RamOps:
    """X86EmulateOps over a bytearray. MMIO ranges read through `mmio_read` and may
    answer IO_NEEDED until `mmio_complete` supplies the data (like userspace would)."""

    mode: str = "long64"
    mem: bytearray = field(default_factory=lambda: bytearray(0x20000))
    regs: list[int] = field(default_factory=lambda: [0] * 16)
    cpl_value: int = 0
    cr: dict[int, int] = field(default_factory=dict)
    msrs: dict[int, int] = field(default_factory=dict)
    dr: dict[int, int] = field(default_factory=lambda: {6: 0xFFFF0FF0, 7: 0x400})
    gdt: DescPtr = field(default_factory=DescPtr)
    idt: DescPtr = field(default_factory=lambda: DescPtr(0x3FF, 0))
    xmm: list[bytes] = field(default_factory=lambda: [bytes(32)] * 16)
    mm: list[int] = field(default_factory=lambda: [0] * 8)
    fcw: int = 0x37F
    fsw: int = 0
    segments: dict[int, SegmentState] = field(default_factory=dict)
    # Devices: MMIO [start, end) ranges and port handlers.
    mmio: list[tuple[int, int]] = field(default_factory=list)
    mmio_values: dict[int, int] = field(default_factory=dict)
    mmio_needs_exit: bool = False  # True: first read of an MMIO range returns IO_NEEDED
    pio_in: Callable[[int, int], int] = lambda port, size: 0xFFFFFFFF
    pio_needs_exit: bool = False
    # Records.
    device_reads: list[tuple[int, int]] = field(default_factory=list)
    mmio_writes: list[tuple[int, bytes]] = field(default_factory=list)
    pio_in_calls: list[tuple[int, int, int]] = field(default_factory=list)
    pio_outs: list[tuple[int, int, bytes]] = field(default_factory=list)
    halted: bool = False
    bugged: bool = False
    hypercall_fixed: int = 0
    _pending_mmio: dict[tuple[int, int], bytes] = field(default_factory=dict)
    _pending_pio: bytes | None = None

    def __post_init__(self) -> None:
        if not self.segments:
            self.segments = flat_segments(self.mode)
        self.cr.setdefault(0, 0x10 if self.mode == "real16" else 0x80000011)
        self.cr.setdefault(4, X86_CR4_OSFXSR | X86_CR4_OSXSAVE | (0x20 if self.mode == "long64"
                                                                  else 0))
        self.cr.setdefault(2, 0)
        self.cr.setdefault(3, 0)
        self.cr.setdefault(8, 0)
        if self.mode == "long64":
            self.msrs.setdefault(MSR_EFER, EFER_LMA | EFER_LME | EFER_SCE)
        self.msrs.setdefault(MSR_EFER, 0)

    # --- plumbing -------------------------------------------------------------------
    def _ram(self, addr: int, size: int, fault: X86Exception | None, write: bool) -> bool:
        if 0 <= addr and addr + size <= len(self.mem):
            return True
        if fault is not None:
            fault.vector, fault.error_code_valid = PF_VECTOR, True
            fault.error_code, fault.address = (2 if write else 0), addr
        return False

    def _is_mmio(self, addr: int) -> bool:
        for lo, hi in self.mmio:
            if lo <= addr < hi:
                return True
        return False

    # --- X86EmulateOps ----------------------------------------------------------------
    def vm_bugged(self, ctxt: X86EmulateCtxt) -> None:
        self.bugged = True

    def read_gpr(self, ctxt: X86EmulateCtxt, reg: int) -> int:
        return self.regs[reg]

    def write_gpr(self, ctxt: X86EmulateCtxt, reg: int, val: int) -> None:
        self.regs[reg] = val & 0xFFFFFFFFFFFFFFFF

    def read_std(self, ctxt, addr, val, bytes, fault, system):  # type: ignore[no-untyped-def]
        if not self._ram(addr, bytes, fault, False):
            return X86EMUL_PROPAGATE_FAULT
        val[:bytes] = self.mem[addr:addr + bytes]
        return X86EMUL_CONTINUE

    def write_std(self, ctxt, addr, val, bytes, fault, system):  # type: ignore[no-untyped-def]
        if not self._ram(addr, bytes, fault, True):
            return X86EMUL_PROPAGATE_FAULT
        self.mem[addr:addr + bytes] = val[:bytes]
        return X86EMUL_CONTINUE

    def fetch(self, ctxt, addr, val, bytes, fault):  # type: ignore[no-untyped-def]
        return self.read_std(ctxt, addr, val, bytes, fault, False)

    def read_emulated(self, ctxt, addr, val, bytes, fault):  # type: ignore[no-untyped-def]
        if not self.mmio and 0 <= addr and addr + bytes <= len(self.mem):   # plain RAM: read_std's copy
            val[:bytes] = self.mem[addr:addr + bytes]
            return X86EMUL_CONTINUE
        if self._is_mmio(addr):
            key = (addr, bytes)
            if key in self._pending_mmio:  # userspace answered: consume it
                val[:bytes] = self._pending_mmio.pop(key)
                return X86EMUL_CONTINUE
            self.device_reads.append(key)
            data = self.mmio_values.get(addr, 0).to_bytes(8, "little")[:bytes].ljust(bytes, b"\0")
            if self.mmio_needs_exit:
                self._pending_mmio[key] = data  # what "userspace" will answer
                return X86EMUL_IO_NEEDED
            val[:bytes] = data
            return X86EMUL_CONTINUE
        return self.read_std(ctxt, addr, val, bytes, fault, False)

    def write_emulated(self, ctxt, addr, val, bytes, fault):  # type: ignore[no-untyped-def]
        if not self.mmio and 0 <= addr and addr + bytes <= len(self.mem):   # plain RAM: write_std's copy
            self.mem[addr:addr + bytes] = val[:bytes]
            return X86EMUL_CONTINUE
        if self._is_mmio(addr):
            self.mmio_writes.append((addr, as_bytes(val)))
            return X86EMUL_CONTINUE
        return self.write_std(ctxt, addr, val, bytes, fault, False)

    def cmpxchg_emulated(self, ctxt, addr, old, new, bytes, fault):  # type: ignore[no-untyped-def]
        return self.write_emulated(ctxt, addr, new, bytes, fault)

    def invlpg(self, ctxt: X86EmulateCtxt, addr: int) -> None:
        pass

    def pio_in_emulated(self, ctxt, size, port, val, count):  # type: ignore[no-untyped-def]
        if self._pending_pio is not None:
            val[:len(self._pending_pio)] = self._pending_pio
            self._pending_pio = None
            return 1
        self.pio_in_calls.append((port, size, count))
        data = b"".join((self.pio_in(port, size) & ((1 << (8 * size)) - 1))
                        .to_bytes(size, "little") for _ in range(count))
        if self.pio_needs_exit:
            self._pending_pio = data
            return 0
        val[:len(data)] = data
        return 1

    def pio_out_emulated(self, ctxt, size, port, val, count):  # type: ignore[no-untyped-def]
        self.pio_outs.append((port, size, bytes(val)))
        return 1

    def get_segment(self, ctxt, seg):  # type: ignore[no-untyped-def]
        s = self.segments[seg]
        return s.selector, s.desc, s.base3

    def set_segment(self, ctxt, selector, desc, base3, seg):  # type: ignore[no-untyped-def]
        self.segments[seg] = SegmentState(selector, desc.copy(), base3)

    def get_cached_segment_base(self, ctxt, seg):  # type: ignore[no-untyped-def]
        s = self.segments[seg]
        return s.desc.base | (s.base3 << 32)

    def get_gdt(self, ctxt): return DescPtr(self.gdt.size, self.gdt.address)  # type: ignore
    def get_idt(self, ctxt): return DescPtr(self.idt.size, self.idt.address)  # type: ignore
    def set_gdt(self, ctxt, dt): self.gdt = DescPtr(dt.size, dt.address)  # type: ignore
    def set_idt(self, ctxt, dt): self.idt = DescPtr(dt.size, dt.address)  # type: ignore
    def get_cr(self, ctxt, cr): return self.cr.get(cr, 0)  # type: ignore

    def set_cr(self, ctxt, cr, val):  # type: ignore[no-untyped-def]
        self.cr[cr] = val
        return 0

    def cpl(self, ctxt): return self.cpl_value  # type: ignore
    def get_dr(self, ctxt, dr): return self.dr.get(dr, 0)  # type: ignore

    def set_dr(self, ctxt, dr, value):  # type: ignore[no-untyped-def]
        self.dr[dr] = value
        return 0

    def get_msr_with_filter(self, ctxt, msr_index):  # type: ignore[no-untyped-def]
        if msr_index not in self.msrs:
            return X86EMUL_PROPAGATE_FAULT, 0
        return X86EMUL_CONTINUE, self.msrs[msr_index]

    def set_msr_with_filter(self, ctxt, msr_index, data):  # type: ignore[no-untyped-def]
        self.msrs[msr_index] = data
        return X86EMUL_CONTINUE

    def get_msr(self, ctxt, msr_index):  # type: ignore[no-untyped-def]
        if msr_index not in self.msrs:
            return 1, 0
        return 0, self.msrs[msr_index]

    def check_rdpmc_early(self, ctxt, pmc): return 0  # type: ignore
    def read_pmc(self, ctxt, pmc): return 0, 0x1234  # type: ignore

    def halt(self, ctxt: X86EmulateCtxt) -> None:
        self.halted = True

    def wbinvd(self, ctxt: X86EmulateCtxt) -> None:
        pass

    def fix_hypercall(self, ctxt: X86EmulateCtxt) -> int:
        self.hypercall_fixed += 1
        return X86EMUL_CONTINUE

    def intercept(self, ctxt, info, stage): return X86EMUL_CONTINUE  # type: ignore

    def get_cpuid(self, ctxt, eax, ecx, exact_only):  # type: ignore[no-untyped-def]
        if eax == 0:
            return 0xD, 0x756E6547, 0x6C65746E, 0x49656E69
        return 0, 0, 0, 0

    def guest_has_movbe(self, ctxt): return True  # type: ignore
    def guest_has_fxsr(self, ctxt): return True  # type: ignore
    def guest_has_rdpid(self, ctxt): return True  # type: ignore
    def guest_cpuid_is_intel_compatible(self, ctxt): return True  # type: ignore
    def set_nmi_mask(self, ctxt, masked): pass  # type: ignore
    def is_smm(self, ctxt): return False  # type: ignore
    def is_guest_mode(self, ctxt): return False  # type: ignore
    def leave_smm(self, ctxt): return 0  # type: ignore
    def triple_fault(self, ctxt): pass  # type: ignore
    def set_xcr(self, ctxt, index, xcr): return 0 if index == 0 and xcr & 1 else 1  # type: ignore
    def get_untagged_addr(self, ctxt, addr, flags): return addr  # type: ignore

    def is_canonical_addr(self, ctxt, addr, flags):  # type: ignore[no-untyped-def]
        top = addr >> 47
        return top in (0, 0x1FFFF)

    def read_sse_reg(self, ctxt, reg): return self.xmm[reg][:16]  # type: ignore
    def write_sse_reg(self, ctxt, reg, data):  # type: ignore[no-untyped-def]
        self.xmm[reg] = bytes(data[:16]) + self.xmm[reg][16:]
    def read_avx_reg(self, ctxt, reg): return self.xmm[reg]  # type: ignore
    def write_avx_reg(self, ctxt, reg, data): self.xmm[reg] = bytes(data[:32])  # type: ignore
    def read_mmx_reg(self, ctxt, reg): return self.mm[reg]  # type: ignore
    def write_mmx_reg(self, ctxt, reg, val): self.mm[reg] = val  # type: ignore
    def fpu_fninit(self, ctxt): self.fcw, self.fsw = 0x37F, 0  # type: ignore
    def fpu_fnstcw(self, ctxt): return self.fcw  # type: ignore
    def fpu_fnstsw(self, ctxt): return self.fsw  # type: ignore

    def fpu_fxsave(self, ctxt):  # type: ignore[no-untyped-def]
        img = bytearray(512)
        img[0:2] = self.fcw.to_bytes(2, "little")
        img[2:4] = self.fsw.to_bytes(2, "little")
        img[24:28] = (0x1F80).to_bytes(4, "little")
        for i in range(16):
            img[160 + 16 * i:176 + 16 * i] = self.xmm[i][:16]
        return bytes(img)

    def fpu_fxrstor(self, ctxt, image):  # type: ignore[no-untyped-def]
        self.fcw = int.from_bytes(image[0:2], "little")
        self.fsw = int.from_bytes(image[2:4], "little")
        for i in range(16):
            self.xmm[i] = bytes(image[160 + 16 * i:176 + 16 * i]) + self.xmm[i][16:]
        return X86EMUL_CONTINUE



def make_ctxt(ops: RamOps, rip: int = 0, eflags: int = 0x2,
              features: EmulatorFeatures | None = None) -> X86EmulateCtxt:
    """init_emulate_ctxt: architectural inputs from the (fake) vCPU."""
    ctxt = X86EmulateCtxt(ops, features=features)
    ctxt.mode = MODES[ops.mode]
    ctxt.eip, ctxt.eflags = rip, eflags
    return ctxt


@dataclass(slots=True)
class RunResult:
    """What one x86_emulate_instruction-like run produced."""

    rc: int
    restarts: int = 0


def run_insn(ctxt: X86EmulateCtxt, insn: bytes | None = None, emulation_type: int = 0,
             max_restarts: int = 1 << 20) -> RunResult:
    """Decode (unless NO_DECODE) and execute, looping on EMULATION_RESTART as x86.c does.

    Simplified stand-in for x86_emulate_instruction: no exception injection, no
    writeback of RIP/RFLAGS into a vCPU (the caller reads ctxt.eip / ctxt.eflags).
    """
    rc, restarts = emulate_insn_bytes(ctxt, insn, emulation_type, max_restarts)
    return RunResult(rc, restarts)


def emulate_insn_bytes(ctxt: X86EmulateCtxt, insn: bytes | None = None, emulation_type: int = 0,
                       max_restarts: int = 1 << 20) -> tuple[int, int]:
    """run_insn's work, returning (rc, restarts) with no result object (the throughput bench's loop)."""
    if not emulation_type & 1:  # EMULTYPE_NO_DECODE
        exc = ctxt.exception      # cleared in place, as init_emulate_ctxt clears the ctxt's own
        exc.vector, exc.error_code_valid, exc.error_code = 0, False, 0
        exc.nested_page_fault, exc.address, exc.async_page_fault = False, 0, False
        ctxt.have_exception = False
        ctxt.interruptibility = 0
        ctxt.perm_ok = False
        init_decode_cache(ctxt)
        rc = x86_decode_insn(ctxt, insn, len(insn) if insn else 0, emulation_type)
        if rc != EMULATION_OK:
            return rc, 0
    restarts = 0
    while True:
        rc = x86_emulate_insn(ctxt)
        if rc != EMULATION_RESTART or ctxt.have_exception or restarts >= max_restarts:
            return rc, restarts
        restarts += 1
