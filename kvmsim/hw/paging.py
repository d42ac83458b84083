"""The CPU's guest page walk (SDM 4.3-4.5): linear → guest-physical, with #PF error codes.

Silicon needs it to report GUEST_LINEAR/PHYSICAL_ADDRESS on EPT exits and to push
event frames; KVM's emulator walker (mmu paging_tmpl.h) uses the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

PFERR_PRESENT_MASK = 1 << 0
PFERR_WRITE_MASK = 1 << 1
PFERR_USER_MASK = 1 << 2
PFERR_RSVD_MASK = 1 << 3
PFERR_FETCH_MASK = 1 << 4
PFERR_GUEST_FINAL_MASK = 1 << 32
PFERR_GUEST_PAGE_MASK = 1 << 33

X86_CR0_PE = 1 << 0
X86_CR0_PG = 1 << 31
X86_CR0_WP = 1 << 16
X86_CR4_PSE = 1 << 4
X86_CR4_PAE = 1 << 5
EFER_LMA = 1 << 10
EFER_NX = 1 << 11

_P, _RW, _US, _PS, _NX = 1, 2, 4, 0x80, 1 << 63
_ADDR52 = 0x000F_FFFF_FFFF_F000


@dataclass(frozen=True, slots=True)
class PageFault(Exception):
    """Raised by the walk; `error_code` is the architectural #PF error code."""

    address: int
    error_code: int


ReadPhys = Callable[[int, int], int]  # (gpa, size) -> little-endian value


def walk(read_phys: ReadPhys, cr0: int, cr3: int, cr4: int, efer: int, linear: int,
         write: bool = False, user: bool = False, fetch: bool = False) -> int:
    """Translate `linear`; raise PageFault like the CPU would (accessed/dirty bits not modelled)."""
    if not cr0 & X86_CR0_PG:
        return linear & 0xFFFF_FFFF if not efer & EFER_LMA else linear
    err = (PFERR_WRITE_MASK if write else 0) | (PFERR_USER_MASK if user else 0) | \
          (PFERR_FETCH_MASK if fetch and (efer & EFER_NX or not cr4 & X86_CR4_PAE) else 0)
    if efer & EFER_LMA:
        levels, table, width = 4, cr3 & _ADDR52, 8
    elif cr4 & X86_CR4_PAE:
        pdpte = read_phys((cr3 & 0xFFFF_FFE0) + ((linear >> 30) & 3) * 8, 8)
        if not pdpte & _P:
            raise PageFault(linear, err)
        levels, table, width = 2, pdpte & _ADDR52, 8
    else:
        levels, table, width = 2, cr3 & 0xFFFF_F000, 4
    allowed_w = allowed_u = True
    nx = False
    for level in range(levels, 0, -1):
        shift = 12 + (9 if width == 8 else 10) * (level - 1)
        idx = (linear >> shift) & (0x1FF if width == 8 else 0x3FF)
        entry = read_phys(table + idx * width, width)
        if not entry & _P:
            raise PageFault(linear, err)
        allowed_w &= bool(entry & _RW)
        allowed_u &= bool(entry & _US)
        nx |= bool(entry & _NX) if width == 8 else False
        large = level > 1 and entry & _PS and (width == 8 or cr4 & X86_CR4_PSE)
        if large or level == 1:
            if (write and not allowed_w and (user or cr0 & X86_CR0_WP)) or (user and not allowed_u) \
                    or (fetch and nx and efer & EFER_NX):
                raise PageFault(linear, err | PFERR_PRESENT_MASK)
            if level == 1:
                base = entry & (_ADDR52 if width == 8 else 0xFFFF_F000)
                return base | (linear & 0xFFF)
            size = 1 << shift
            base = entry & (_ADDR52 if width == 8 else 0xFFC0_0000) & ~(size - 1)
            return base | (linear & (size - 1))
        table = entry & (_ADDR52 if width == 8 else 0xFFFF_F000)
    raise AssertionError("unreachable")
