"""Model of kvm_emulate.h's struct x86_emulate_ops: the one boundary between emulate/ and x86.py.

The emulator never touches vCPU state directly; everything goes through these callbacks
(x86.c wires them as `emulate_ops`). Conventions of the Python spelling:

- "out" pointers become return values; a callback that filled a buffer in C receives a
  writable `memoryview` here (so `read_emulated` still reads *straight into* the read
  cache slot, as §7.2 requires) and returns an X86EMUL_* code.
- memory callbacks take the `X86Exception` record to fill on a fault (struct
  x86_exception), like the kernel's.
- `get_segment` returns None when the segment is unusable (the C bool), else
  (selector, desc, base3).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .ctxt import X86EmulateCtxt

# The callbacks keep the kernel's parameter name `bytes`, which hides the builtin there.
as_bytes = builtins.bytes


@dataclass
class X86Exception:
    """struct x86_exception: the fault a callback or the emulator raises for the guest."""

    vector: int = 0
    error_code_valid: bool = False
    error_code: int = 0
    nested_page_fault: bool = False
    address: int = 0
    async_page_fault: bool = False


@dataclass
class DescStruct:
    """struct desc_struct, unpacked: an 8-byte segment descriptor (base3 travels apart)."""

    base: int = 0
    limit: int = 0xFFFF  # raw 20-bit limit; see limit_scaled()
    type: int = 3
    s: int = 1
    dpl: int = 0
    p: int = 1
    avl: int = 0
    l: int = 0  # noqa: E741 (the kernel's field name)
    d: int = 0
    g: int = 0

    def limit_scaled(self) -> int:
        """desc_limit_scaled(): the byte-granular limit."""
        return ((self.limit << 12) | 0xFFF) if self.g else self.limit

    @classmethod
    def unpack(cls, raw: bytes) -> "DescStruct":
        """Decode the 8 bytes of a GDT/LDT entry."""
        lo = int.from_bytes(raw[0:4], "little")
        hi = int.from_bytes(raw[4:8], "little")
        return cls(base=(lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000),
                   limit=(lo & 0xFFFF) | (hi & 0xF0000), type=(hi >> 8) & 0xF,
                   s=(hi >> 12) & 1, dpl=(hi >> 13) & 3, p=(hi >> 15) & 1,
                   avl=(hi >> 20) & 1, l=(hi >> 21) & 1, d=(hi >> 22) & 1, g=(hi >> 23) & 1)

    def pack(self) -> bytes:
        """Encode back into the 8-byte GDT/LDT layout."""
        base, lim = self.base & 0xFFFFFFFF, self.limit & 0xFFFFF
        lo = (lim & 0xFFFF) | ((base & 0xFFFF) << 16)
        hi = (((base >> 16) & 0xFF) | (self.type << 8) | (self.s << 12) | (self.dpl << 13)
              | (self.p << 15) | (lim & 0xF0000) | (self.avl << 20) | (self.l << 21)
              | (self.d << 22) | (self.g << 23) | (base & 0xFF000000))
        return lo.to_bytes(4, "little") + hi.to_bytes(4, "little")

    def copy(self) -> "DescStruct":
        return DescStruct(**self.__dict__)


@dataclass
class DescPtr:
    """struct desc_ptr: GDTR/IDTR contents."""

    size: int = 0
    address: int = 0


class X86InterceptStage(IntEnum):
    """enum x86_intercept_stage: when a nested intercept check runs."""

    X86_ICPT_PRE_EXCEPT = 0
    X86_ICPT_POST_EXCEPT = 1
    X86_ICPT_POST_MEMACCESS = 2


class X86Intercept(IntEnum):
    """enum x86_intercept (kvm_emulate.h), in the kernel's order."""

    none = 0
    cr_read = 1
    cr_write = 2
    clts = 3
    lmsw = 4
    smsw = 5
    dr_read = 6
    dr_write = 7
    lidt = 8
    sidt = 9
    lgdt = 10
    sgdt = 11
    lldt = 12
    sldt = 13
    ltr = 14
    str = 15
    rdtsc = 16
    rdpmc = 17
    pushf = 18
    popf = 19
    cpuid = 20
    rsm = 21
    iret = 22
    intn = 23
    invd = 24
    pause = 25
    hlt = 26
    invlpg = 27
    invlpga = 28
    vmrun = 29
    vmload = 30
    vmsave = 31
    vmmcall = 32
    stgi = 33
    clgi = 34
    skinit = 35
    rdtscp = 36
    rdpid = 37
    icebp = 38
    wbinvd = 39
    monitor = 40
    mwait = 41
    rdmsr = 42
    wrmsr = 43
    in_ = 44
    ins = 45
    out = 46
    outs = 47
    xsetbv = 48


@dataclass
class X86InstructionInfo:
    """struct x86_instruction_info: what a nested intercept check is told."""

    intercept: int
    rep_prefix: int
    modrm_mod: int
    modrm_reg: int
    modrm_rm: int
    src_val: int
    dst_val: int
    src_bytes: int
    dst_bytes: int
    src_type: int
    dst_type: int
    ad_bytes: int
    rip: int
    next_rip: int


class X86EmulateOps(Protocol):
    """struct x86_emulate_ops (kvm_emulate.h). Memory callbacks return X86EMUL_*."""

    def vm_bugged(self, ctxt: X86EmulateCtxt) -> None: ...
    def read_gpr(self, ctxt: X86EmulateCtxt, reg: int) -> int: ...
    def write_gpr(self, ctxt: X86EmulateCtxt, reg: int, val: int) -> None: ...
    def read_std(self, ctxt: X86EmulateCtxt, addr: int, val: memoryview, bytes: int,
                 fault: X86Exception | None, system: bool) -> int: ...
    def write_std(self, ctxt: X86EmulateCtxt, addr: int, val: bytes, bytes: int,
                  fault: X86Exception | None, system: bool) -> int: ...
    def fetch(self, ctxt: X86EmulateCtxt, addr: int, val: memoryview, bytes: int,
              fault: X86Exception) -> int: ...
    def read_emulated(self, ctxt: X86EmulateCtxt, addr: int, val: memoryview, bytes: int,
                      fault: X86Exception) -> int: ...
    def write_emulated(self, ctxt: X86EmulateCtxt, addr: int, val: bytes, bytes: int,
                       fault: X86Exception) -> int: ...
    def cmpxchg_emulated(self, ctxt: X86EmulateCtxt, addr: int, old: bytes, new: bytes,
                         bytes: int, fault: X86Exception) -> int: ...
    def invlpg(self, ctxt: X86EmulateCtxt, addr: int) -> None: ...
    # Port I/O: pio_in fills `val` with count*size bytes and returns 1, or returns 0 when
    # userspace must supply the data (x86.c's emulator_pio_in_emulated).
    def pio_in_emulated(self, ctxt: X86EmulateCtxt, size: int, port: int, val: memoryview,
                        count: int) -> int: ...
    def pio_out_emulated(self, ctxt: X86EmulateCtxt, size: int, port: int, val: bytes,
                         count: int) -> int: ...
    def get_segment(self, ctxt: X86EmulateCtxt,
                    seg: int) -> tuple[int, DescStruct, int] | None: ...
    def set_segment(self, ctxt: X86EmulateCtxt, selector: int, desc: DescStruct, base3: int,
                    seg: int) -> None: ...
    def get_cached_segment_base(self, ctxt: X86EmulateCtxt, seg: int) -> int: ...
    def get_gdt(self, ctxt: X86EmulateCtxt) -> DescPtr: ...
    def get_idt(self, ctxt: X86EmulateCtxt) -> DescPtr: ...
    def set_gdt(self, ctxt: X86EmulateCtxt, dt: DescPtr) -> None: ...
    def set_idt(self, ctxt: X86EmulateCtxt, dt: DescPtr) -> None: ...
    def get_cr(self, ctxt: X86EmulateCtxt, cr: int) -> int: ...
    def set_cr(self, ctxt: X86EmulateCtxt, cr: int, val: int) -> int: ...  # 0 = ok
    def cpl(self, ctxt: X86EmulateCtxt) -> int: ...
    def get_dr(self, ctxt: X86EmulateCtxt, dr: int) -> int: ...
    def set_dr(self, ctxt: X86EmulateCtxt, dr: int, value: int) -> int: ...  # <0 = #GP
    # MSRs: (X86EMUL_* code, data). The *_with_filter pair may return IO_NEEDED.
    def get_msr_with_filter(self, ctxt: X86EmulateCtxt, msr_index: int) -> tuple[int, int]: ...
    def set_msr_with_filter(self, ctxt: X86EmulateCtxt, msr_index: int, data: int) -> int: ...
    def get_msr(self, ctxt: X86EmulateCtxt, msr_index: int) -> tuple[int, int]: ...
    def check_rdpmc_early(self, ctxt: X86EmulateCtxt, pmc: int) -> int: ...
    def read_pmc(self, ctxt: X86EmulateCtxt, pmc: int) -> tuple[int, int]: ...
    def halt(self, ctxt: X86EmulateCtxt) -> None: ...
    def wbinvd(self, ctxt: X86EmulateCtxt) -> None: ...
    def fix_hypercall(self, ctxt: X86EmulateCtxt) -> int: ...
    def intercept(self, ctxt: X86EmulateCtxt, info: X86InstructionInfo,
                  stage: X86InterceptStage) -> int: ...
    def get_cpuid(self, ctxt: X86EmulateCtxt, eax: int, ecx: int,
                  exact_only: bool) -> tuple[int, int, int, int]: ...
    def guest_has_movbe(self, ctxt: X86EmulateCtxt) -> bool: ...
    def guest_has_fxsr(self, ctxt: X86EmulateCtxt) -> bool: ...
    def guest_has_rdpid(self, ctxt: X86EmulateCtxt) -> bool: ...
    def guest_cpuid_is_intel_compatible(self, ctxt: X86EmulateCtxt) -> bool: ...
    def set_nmi_mask(self, ctxt: X86EmulateCtxt, masked: bool) -> None: ...
    def is_smm(self, ctxt: X86EmulateCtxt) -> bool: ...
    def is_guest_mode(self, ctxt: X86EmulateCtxt) -> bool: ...
    def leave_smm(self, ctxt: X86EmulateCtxt) -> int: ...
    def triple_fault(self, ctxt: X86EmulateCtxt) -> None: ...
    def set_xcr(self, ctxt: X86EmulateCtxt, index: int, xcr: int) -> int: ...
    def get_untagged_addr(self, ctxt: X86EmulateCtxt, addr: int, flags: int) -> int: ...
    def is_canonical_addr(self, ctxt: X86EmulateCtxt, addr: int, flags: int) -> bool: ...
    # Our additions: the kernel touches the host FPU directly (kvm_read_sse_reg etc.);
    # a model routes vector/x87 state through the boundary instead.
    def read_sse_reg(self, ctxt: X86EmulateCtxt, reg: int) -> bytes: ...  # 16 bytes
    def write_sse_reg(self, ctxt: X86EmulateCtxt, reg: int, data: bytes) -> None: ...
    def read_avx_reg(self, ctxt: X86EmulateCtxt, reg: int) -> bytes: ...  # 32 bytes (YMM)
    def write_avx_reg(self, ctxt: X86EmulateCtxt, reg: int, data: bytes) -> None: ...
    def read_mmx_reg(self, ctxt: X86EmulateCtxt, reg: int) -> int: ...
    def write_mmx_reg(self, ctxt: X86EmulateCtxt, reg: int, val: int) -> None: ...
    def fpu_fninit(self, ctxt: X86EmulateCtxt) -> None: ...
    def fpu_fnstcw(self, ctxt: X86EmulateCtxt) -> int: ...
    def fpu_fnstsw(self, ctxt: X86EmulateCtxt) -> int: ...
    def fpu_fxsave(self, ctxt: X86EmulateCtxt) -> bytes: ...  # 512-byte FXSAVE image
    def fpu_fxrstor(self, ctxt: X86EmulateCtxt, image: bytes) -> int: ...


@dataclass
class SegmentState:
    """A segment register as a fake ops object keeps it (selector + cache + base3)."""

    selector: int = 0
    desc: DescStruct = field(default_factory=DescStruct)
    base3: int = 0
