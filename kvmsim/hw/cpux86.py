"""The hidden CPU state unicorn keeps in QEMU's CPUX86State (target/i386/cpu.h), read and
written in place.

unicorn's register API gives selectors but not the descriptor caches behind them, and
writing a selector either reloads the cache (16/32-bit engines) or leaves it alone (64-bit
engine).  A VMX CPU keeps base, limit and access rights per segment register, loaded when
the register is loaded (SDM 3.4.3) and changed by KVM_SET_SREGS; QEMU's TCG keeps exactly
that in env->segs[], and derives its translation flags (hflags: PE, CS32, SS32, CS64, LMA,
ADDSEG, CPL) from it.  This module maps the head of CPUX86State onto ctypes, finds where
the engine keeps it by probing with known values once per process, and recomputes hflags
after every write so that TCG translates for the mode the state describes.
"""

from __future__ import annotations

import ctypes
import functools

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as U

from kvmsim.errors import KvmSimBug

R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)          # QEMU's segment indices
SEG_INDEX = {"es": R_ES, "cs": R_CS, "ss": R_SS, "ds": R_DS, "fs": R_FS, "gs": R_GS}

# SegmentCache.flags is the descriptor's high dword: type 8-11, S 12, DPL 13-14, P 15, AVL 20, L 21, B 22, G 23.
DESC_TYPE_SHIFT, DESC_S_SHIFT, DESC_DPL_SHIFT, DESC_P_SHIFT = 8, 12, 13, 15
DESC_AVL_SHIFT, DESC_L_SHIFT, DESC_B_SHIFT, DESC_G_SHIFT = 20, 21, 22, 23
DESC_L_MASK, DESC_B_MASK, DESC_P_MASK = 1 << DESC_L_SHIFT, 1 << DESC_B_SHIFT, 1 << DESC_P_SHIFT

HF_CPL_MASK = 3
HF_CS32_MASK, HF_SS32_MASK, HF_ADDSEG_MASK, HF_PE_MASK = 1 << 4, 1 << 5, 1 << 6, 1 << 7
HF_TF_MASK, HF_MP_MASK, HF_EM_MASK, HF_TS_MASK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
HF_IOPL_MASK, HF_LMA_MASK, HF_CS64_MASK, HF_VM_MASK = 3 << 12, 1 << 14, 1 << 15, 1 << 17
HF_OSFXSR_MASK = 1 << 22
# The hflags that follow from CR0/CR4/EFER/EFLAGS and the caches; the others (SMM, inhibit-IRQ, ...) are kept.
_HF_DERIVED = (HF_CPL_MASK | HF_PE_MASK | HF_MP_MASK | HF_EM_MASK | HF_TS_MASK | HF_TF_MASK | HF_VM_MASK
               | HF_IOPL_MASK | HF_OSFXSR_MASK | HF_LMA_MASK | HF_CS32_MASK | HF_SS32_MASK | HF_CS64_MASK
               | HF_ADDSEG_MASK)
CR0_PE, CR0_MP_EM_TS, CR4_OSFXSR, EFER_LMA = 1, 0xE, 1 << 9, 1 << 10
EFLAGS_TF_IOPL_VM = (1 << 8) | (3 << 12) | (1 << 17)


class SegmentCache(ctypes.Structure):
    """QEMU's SegmentCache: the selector and the hidden part (limit already byte-granular)."""

    _fields_ = [("selector", ctypes.c_uint32), ("base", ctypes.c_uint64),
                ("limit", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class CPUX86StateHead(ctypes.Structure):
    """The first fields of CPUX86State (x86_64 target), in QEMU's order, up to EFER."""

    _fields_ = [("regs", ctypes.c_uint64 * 16), ("eip", ctypes.c_uint64), ("eflags", ctypes.c_uint64),
                ("cc_dst", ctypes.c_uint64), ("cc_src", ctypes.c_uint64), ("cc_src2", ctypes.c_uint64),
                ("cc_op", ctypes.c_uint32), ("df", ctypes.c_int32),
                ("hflags", ctypes.c_uint32), ("hflags2", ctypes.c_uint32),
                ("segs", SegmentCache * 6), ("ldt", SegmentCache), ("tr", SegmentCache),
                ("gdt", SegmentCache), ("idt", SegmentCache),
                ("cr", ctypes.c_uint64 * 9), ("a20_mask", ctypes.c_int32),
                ("bnd_regs", ctypes.c_uint64 * 8), ("bndcs_regs", ctypes.c_uint64 * 2),
                ("msr_bndcfgs", ctypes.c_uint64), ("efer", ctypes.c_uint64)]


_GPR_ORDER = [U.UC_X86_REG_RAX, U.UC_X86_REG_RCX, U.UC_X86_REG_RDX, U.UC_X86_REG_RBX, U.UC_X86_REG_RSP,
              U.UC_X86_REG_RBP, U.UC_X86_REG_RSI, U.UC_X86_REG_RDI] + [
              getattr(U, f"UC_X86_REG_R{i}") for i in range(8, 16)]
_MAGIC = [(0x6B76_6D73_696D_0000 | i * 0x1111) for i in range(16)]   # "kvmsim" + index


def _rw_mappings() -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perm = line.split()[:2]
            if perm.startswith("rw"):
                lo, hi = (int(x, 16) for x in span.split("-"))
                out.append((lo, hi))
    return out


def _mapped_end(maps: list[tuple[int, int]], addr: int) -> int:
    for lo, hi in maps:
        if lo <= addr < hi:
            return hi
    return 0


@functools.cache
def _env_location() -> tuple[int, int]:
    """(offset in uc_struct of the CPU pointer, offset of env from it), found by writing 16
    distinct GPR values and looking for them behind each pointer of the engine's struct."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    for rid, v in zip(_GPR_ORDER, _MAGIC):
        uc.reg_write(rid, v)
    pattern = b"".join(v.to_bytes(8, "little") for v in _MAGIC)
    maps = _rw_mappings()
    uch = uc._uch.value
    end = _mapped_end(maps, uch)
    hits = []
    for off in range(0, min(8192, end - uch - 8), 8):
        ptr = ctypes.c_uint64.from_address(uch + off).value
        top = _mapped_end(maps, ptr)
        if not top:
            continue
        at = ctypes.string_at(ptr, min(top - ptr, 1 << 17)).find(pattern)
        if at >= 0:
            hits.append((off, at))
    # A hit must hold for a second engine too (a pointer that merely lands near the first
    # engine's CPU would not); the engine's own CPU pointer is the one that always does.
    other = Uc(UC_ARCH_X86, UC_MODE_64)
    other.reg_write(U.UC_X86_REG_R14, 0x6B76_6D73_696D_EEEE)
    maps = _rw_mappings()
    for loc in hits:
        ptr = ctypes.c_uint64.from_address(other._uch.value + loc[0]).value
        if _mapped_end(maps, ptr + loc[1] + 8 * 15) and _env_at(other, loc).regs[14] == 0x6B76_6D73_696D_EEEE:
            _check_layout(other, _env_at(other, loc))
            return loc
    raise KvmSimBug("cannot locate unicorn's CPUX86State (unknown unicorn build)")


def _env_at(uc: Uc, loc: tuple[int, int]) -> CPUX86StateHead:
    ptr = ctypes.c_uint64.from_address(uc._uch.value + loc[0]).value
    return CPUX86StateHead.from_address(ptr + loc[1])


def _check_layout(uc: Uc, env: CPUX86StateHead) -> None:
    """Each field this module uses holds what unicorn's own API wrote (else the layout differs)."""
    uc.reg_write(U.UC_X86_REG_RIP, 0x1234_5678_9ABC)
    uc.reg_write(U.UC_X86_REG_GDTR, (0, 0x1111_2222_3333, 0x4455, 0))
    uc.reg_write(U.UC_X86_REG_IDTR, (0, 0x6666_7777_8888, 0x99AA, 0))
    uc.reg_write(U.UC_X86_REG_TR, (0x28, 0xABCD_0000, 0x67, 0x8B00))
    uc.reg_write(U.UC_X86_REG_LDTR, (0x30, 0xDCBA_0000, 0x77, 0x8200))
    uc.reg_write(U.UC_X86_REG_CR3, 0x7000)
    uc.reg_write(U.UC_X86_REG_CR2, 0x7777_0000_1234)
    for name, rid in (("es", U.UC_X86_REG_ES), ("cs", U.UC_X86_REG_CS), ("ss", U.UC_X86_REG_SS),
                      ("ds", U.UC_X86_REG_DS)):
        uc.reg_write(rid, 0x40 + 8 * SEG_INDEX[name])   # the 64-bit engine stores the selector only
    uc.msr_write(0xC0000080, 0x901)                     # EFER.SCE|LME|NXE
    ok = (env.eip == 0x1234_5678_9ABC and (env.gdt.base, env.gdt.limit) == (0x1111_2222_3333, 0x4455)
          and (env.idt.base, env.idt.limit) == (0x6666_7777_8888, 0x99AA)
          and (env.tr.selector, env.tr.base, env.tr.limit, env.tr.flags) == (0x28, 0xABCD_0000, 0x67, 0x8B00)
          and (env.ldt.selector, env.ldt.base, env.ldt.limit, env.ldt.flags) == (0x30, 0xDCBA_0000, 0x77, 0x8200)
          and env.cr[3] == 0x7000 and env.cr[2] == 0x7777_0000_1234
          and all(env.segs[i].selector == 0x40 + 8 * i for i in range(4))
          and env.efer & 0xFFF == uc.msr_read(0xC0000080) & 0xFFF and env.efer & 0x901 == 0x901
          and env.hflags & HF_CS64_MASK)
    if not ok:
        raise KvmSimBug("unicorn's CPUX86State layout is not the one kvmsim/hw/cpux86.py expects")


def env_of(uc: Uc) -> CPUX86StateHead:
    """The live CPUX86State of one engine (valid while the engine exists and is not running)."""
    loc = _env_location()
    uc.reg_write(U.UC_X86_REG_R15, 0x6B76_6D73_696D_FFFF)   # also makes unicorn create its CPU
    env = _env_at(uc, loc)
    if env.regs[15] != 0x6B76_6D73_696D_FFFF:
        raise KvmSimBug("unicorn's CPUX86State moved")
    uc.reg_write(U.UC_X86_REG_R15, 0)
    return env


def live_u32(env: CPUX86StateHead, field: str, seg: int | None = None) -> ctypes.c_uint32:
    """A 32-bit field of the live CPUX86State (`hflags`, or a descriptor cache's `flags` with `seg`)
    as one ctypes scalar whose .value reads it in place: read on every exit, it skips building the
    array and structure views that `env.segs[seg].flags` makes on each access."""
    off = CPUX86StateHead.hflags.offset if seg is None else (
        CPUX86StateHead.segs.offset + seg * ctypes.sizeof(SegmentCache) + getattr(SegmentCache, field).offset)
    return ctypes.c_uint32.from_address(ctypes.addressof(env) + off)


def update_hflags(env: CPUX86StateHead) -> None:
    """Recompute the translation flags from CR0/CR4/EFER/EFLAGS and the CS/SS/DS/ES caches, as
    QEMU does after loading a whole CPU state (x86_update_hflags)."""
    cs, ss = env.segs[R_CS].flags, env.segs[R_SS].flags
    cr0 = env.cr[0]
    h = env.hflags & ~_HF_DERIVED
    h |= (ss >> DESC_DPL_SHIFT) & HF_CPL_MASK
    h |= HF_PE_MASK if cr0 & CR0_PE else 0
    h |= (cr0 & CR0_MP_EM_TS) << 8                                   # CR0.MP/EM/TS -> HF_MP/EM/TS
    h |= env.eflags & EFLAGS_TF_IOPL_VM
    h |= HF_OSFXSR_MASK if env.cr[4] & CR4_OSFXSR else 0
    if env.efer & EFER_LMA:
        h |= HF_LMA_MASK
    if h & HF_LMA_MASK and cs & DESC_L_MASK:
        h |= HF_CS32_MASK | HF_SS32_MASK | HF_CS64_MASK
    else:
        h |= HF_CS32_MASK if cs & DESC_B_MASK else 0
        h |= HF_SS32_MASK if ss & DESC_B_MASK else 0
        if not cr0 & CR0_PE or env.eflags & (1 << 17) or not h & HF_CS32_MASK:
            h |= HF_ADDSEG_MASK
        elif env.segs[R_DS].base | env.segs[R_ES].base | env.segs[R_SS].base:
            h |= HF_ADDSEG_MASK
    env.hflags = h
