"""Boot setup, userspace's job (as KVM selftests' lib/x86_64/processor.c vcpu_setup/kvm_util):
write descriptor and page tables into guest RAM, then KVM_SET_SREGS / KVM_SET_REGS.

Only the ioctl-like VcpuFd API is used, so the same code boots the simulated vCPU and a
real /dev/kvm one.  Guests (guests/lib/kvmsim.inc) rely on this fixed layout:

    GPA        real16                    prot32                     long64
    0x0000     IVT (reset: base 0, limit 0x3ff)
    0x1000     image origin (IP = entry)
    0x2000                               GDT (below)                same GDT
    0x2800                               TSS (0x68 bytes, zeroed)   same TSS
    0x3000                               IDT, limit 0x7ff, zeroed   IDT, limit 0xfff, zeroed
    0x4000                                                          PML4 (1 entry -> PDPT)
    0x5000                                                          PDPT (4 entries -> PDs)
    0x6000-0x9fff                                                   4 PDs: 2 MiB pages, 0-4 GiB
                                                                    (U/S=0 but on paging.user ranges)
    0x7c00     SS:SP = 0:0x7c00
    0x80000                              ESP = 0x80000              RSP = 0x80000
    0x100000                             image origin (EIP = entry) image origin (RIP = entry)

    GDT (GDT_BASE, limit 0x2f)         selector  descriptor
      null                             0x00
      flat 4 GiB code32 (type 0xb)     0x08      db=1 g=1                  prot32 CS
      flat 4 GiB data (type 0x3)       0x10      db=1 g=1                  DS ES FS GS SS
      code64 (type 0xb)                0x18      l=1 db=0 g=1              long64 CS
      TSS (busy, type 0xb) -> 0x2800   0x20      16 bytes (64-bit form)    TR

    real16: CS = DS = ES = FS = GS = SS = 0 (bases 0, limits 0xffff), CR0 = 0x60000010
            (the reset value; KVM's reset CS is f000:fff0 with base 0xffff0000, overridden
            here as selftests do), RFLAGS = 0x2.
    reset:  nothing is written: the vCPU as KVM's reset leaves it (CS f000, base 0xffff0000,
            IP 0xfff0: the first fetch is at 0xfffffff0, normally a KVM_MEM_READONLY slot).
    prot32: CR0 = PE|ET|NE (0x31), paging off, CR4 = 0, EFER = 0, RFLAGS = 0x2.
    long64: CR0 = PE|MP|ET|NE|WP|AM|PG (0x80050033), CR3 = 0x4000,
            CR4 = PAE|OSFXSR|OSXMMEXCPT (0x620), EFER = LME|LMA (0x500), RFLAGS = 0x2.

All general-purpose registers other than RIP/RSP start at 0.  The TSS is needed because
VMX refuses a protected-mode guest without a usable TR (SDM 26.3.1.2).  RAM must cover
every table the mode needs (0x0-0x9fff for long64); otherwise setup_boot raises
ScenarioError.
"""

from __future__ import annotations

import struct
from typing import Sequence

from kvmsim.errors import ScenarioError
from kvmsim.uapi import KvmRegs, KvmSegment, KvmSregs, VcpuFd

MODES = ("real16", "prot32", "long64", "reset")
DEFAULT_ORIGIN: dict[str, int] = {"real16": 0x1000, "prot32": 0x100000, "long64": 0x100000, "reset": 0xFFFF0000}
RESET_VECTOR = 0xFFFFFFF0
DEFAULT_STACK: dict[str, int] = {"real16": 0x7C00, "prot32": 0x80000, "long64": 0x80000}
REAL16_STACK = DEFAULT_STACK["real16"]
PROT_STACK = DEFAULT_STACK["prot32"]

GDT_BASE = 0x2000
TSS_BASE = 0x2800
TSS_LIMIT = 0x67
IDT_BASE = 0x3000
IDT_LIMIT: dict[str, int] = {"real16": 0x3FF, "prot32": 0x7FF, "long64": 0xFFF}
IVT_BASE = 0x0
PML4_BASE = 0x4000
PDPT_BASE = 0x5000
PD_BASE = 0x6000
PD_COUNT = 4  # 4 x 1 GiB: identity map of 0-4 GiB

# Selectors (index << 3, TI=0, RPL=0).
KERNEL_CS32 = 0x08
KERNEL_DS = 0x10
KERNEL_CS64 = 0x18
KERNEL_TSS = 0x20
GDT_LIMIT = KERNEL_TSS + 16 - 1

# Control-register and EFER bits (SDM vol. 3 2.5, 2.2.1).
X86_CR0_PE, X86_CR0_MP, X86_CR0_ET, X86_CR0_NE = 1 << 0, 1 << 1, 1 << 4, 1 << 5
X86_CR0_WP, X86_CR0_AM = 1 << 16, 1 << 18
X86_CR0_NW, X86_CR0_CD, X86_CR0_PG = 1 << 29, 1 << 30, 1 << 31
X86_CR4_PAE, X86_CR4_OSFXSR, X86_CR4_OSXMMEXCPT = 1 << 5, 1 << 9, 1 << 10
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
X86_EFLAGS_FIXED = 0x2

CR0_RESET = X86_CR0_CD | X86_CR0_NW | X86_CR0_ET            # 0x60000010
CR0_PROT32 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE            # 0x31
# 0x80050033, the value Linux runs with (AM is inert at CPL 0).
CR0_LONG64 = CR0_PROT32 | X86_CR0_MP | X86_CR0_WP | X86_CR0_AM | X86_CR0_PG
CR4_LONG64 = X86_CR4_PAE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT  # 0x620
EFER_LONG64 = EFER_LME | EFER_LMA                              # 0x500

# Page-table entry bits.
PTE_PRESENT, PTE_WRITE, PTE_USER, PTE_LARGE = 1 << 0, 1 << 1, 1 << 2, 1 << 7
LARGE_PAGE_SIZE = 2 << 20

# Segment types (SDM vol. 3 table 3-1 / 3-2).
SEG_TYPE_DATA_RW_ACCESSED = 0x3
SEG_TYPE_CODE_XR_ACCESSED = 0xB
SEG_TYPE_TSS_BUSY = 0xB
SEG_TYPE_LDT = 0x2

# Memory each mode's tables need (end GPA, exclusive).
TABLES_END: dict[str, int] = {"real16": 0, "prot32": IDT_BASE + 0x1000,
                              "long64": PD_BASE + PD_COUNT * 0x1000}


def seg(selector: int, base: int, limit: int, type_: int, *, s: int = 1, db: int = 0,
        l: int = 0, g: int = 0, present: int = 1, dpl: int = 0) -> KvmSegment:
    """A kvm_segment; `limit` is the byte-granular (expanded) limit, as KVM reports it."""
    return KvmSegment(base=base, limit=limit, selector=selector, type=type_, present=present,
                      dpl=dpl, db=db, s=s, l=l, g=g, avl=0, unusable=0)


def unusable_seg() -> KvmSegment:
    return KvmSegment(unusable=1)


def gdt_descriptor(sg: KvmSegment) -> int:
    """Encode an 8-byte code/data descriptor (or the low half of a system descriptor)."""
    limit = sg.limit >> 12 if sg.g else sg.limit
    access = sg.type | (sg.s << 4) | (sg.dpl << 5) | (sg.present << 7)
    flags = (sg.avl << 0) | (sg.l << 1) | (sg.db << 2) | (sg.g << 3)
    return ((limit & 0xFFFF) | ((sg.base & 0xFFFFFF) << 16) | (access << 40)
            | (((limit >> 16) & 0xF) << 48) | (flags << 52) | (((sg.base >> 24) & 0xFF) << 56))


def decode_descriptor(desc: int) -> dict[str, int]:
    """Inverse of gdt_descriptor, with the limit expanded when g=1 (tests and the debugger)."""
    limit = (desc & 0xFFFF) | (((desc >> 48) & 0xF) << 16)
    g = (desc >> 55) & 1
    return {"base": ((desc >> 16) & 0xFFFFFF) | (((desc >> 56) & 0xFF) << 24),
            "limit": (limit << 12) | 0xFFF if g else limit,
            "type": (desc >> 40) & 0xF, "s": (desc >> 44) & 1, "dpl": (desc >> 45) & 3,
            "present": (desc >> 47) & 1, "avl": (desc >> 52) & 1, "l": (desc >> 53) & 1,
            "db": (desc >> 54) & 1, "g": g}


def flat_code32() -> KvmSegment:
    return seg(KERNEL_CS32, 0, 0xFFFFFFFF, SEG_TYPE_CODE_XR_ACCESSED, db=1, g=1)


def flat_data() -> KvmSegment:
    return seg(KERNEL_DS, 0, 0xFFFFFFFF, SEG_TYPE_DATA_RW_ACCESSED, db=1, g=1)


def code64() -> KvmSegment:
    return seg(KERNEL_CS64, 0, 0xFFFFFFFF, SEG_TYPE_CODE_XR_ACCESSED, l=1, g=1)


def tss_seg() -> KvmSegment:
    return seg(KERNEL_TSS, TSS_BASE, TSS_LIMIT, SEG_TYPE_TSS_BUSY, s=0)


class _Ram:
    """GPA-addressed view of one RAM region."""

    def __init__(self, ram: memoryview, ram_gpa: int, mode: str) -> None:
        self.mem, self.gpa, self.mode = ram, ram_gpa, mode

    def write(self, gpa: int, data: bytes) -> None:
        off = gpa - self.gpa
        if off < 0 or off + len(data) > len(self.mem):
            raise ScenarioError(None, None, f"{self.mode} boot tables need RAM at GPA "
                                f"{gpa:#x}-{gpa + len(data) - 1:#x}; RAM is {self.gpa:#x}-"
                                f"{self.gpa + len(self.mem) - 1:#x}")
        self.mem[off:off + len(data)] = data


def write_gdt(ram: _Ram) -> None:
    """GDT at GDT_BASE and a zeroed TSS at TSS_BASE (used by prot32 and long64)."""
    tss = tss_seg()
    entries = [0, gdt_descriptor(flat_code32()), gdt_descriptor(flat_data()),
               gdt_descriptor(code64()), gdt_descriptor(tss), tss.base >> 32]
    ram.write(GDT_BASE, struct.pack(f"<{len(entries)}Q", *entries))
    # I/O map base beyond the limit: no I/O bitmap (CPL 0 never consults it anyway).
    ram.write(TSS_BASE, bytes(0x66) + struct.pack("<H", TSS_LIMIT + 1))


def write_page_tables(ram: _Ram, user: Sequence[tuple[int, int]] = ()) -> None:
    """Identity map of 0-4 GiB with 2 MiB pages (selftests' virt_map, simplified to large pages).

    `user`: (addr, size) ranges, 2 MiB-aligned, whose pages get U/S=1, as do the PDPT and PML4
    entries above them (U/S must be set at every level for CPL3 to reach a page)."""
    def is_user(page: int) -> bool:
        return any(a <= page * LARGE_PAGE_SIZE < a + n for a, n in user)

    user_pd = [any(is_user(i * 512 + j) for j in range(512)) for i in range(PD_COUNT)]
    top = PTE_PRESENT | PTE_WRITE
    ram.write(PML4_BASE, struct.pack("<Q", PDPT_BASE | top | (PTE_USER if any(user_pd) else 0)) + bytes(4088))
    ram.write(PDPT_BASE, struct.pack(f"<{PD_COUNT}Q", *(
        PD_BASE + i * 0x1000 | top | (PTE_USER if user_pd[i] else 0) for i in range(PD_COUNT)))
        + bytes(4096 - 8 * PD_COUNT))
    for i in range(PD_COUNT):
        ram.write(PD_BASE + i * 0x1000, struct.pack("<512Q", *(
            (i * 512 + j) * LARGE_PAGE_SIZE | top | PTE_LARGE | (PTE_USER if is_user(i * 512 + j) else 0)
            for j in range(512))))


def _real16_sregs(sregs: KvmSregs) -> None:
    code = seg(0, 0, 0xFFFF, SEG_TYPE_CODE_XR_ACCESSED)
    sregs.cs = code
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, seg(0, 0, 0xFFFF, SEG_TYPE_DATA_RW_ACCESSED))
    sregs.tr = seg(0, 0, 0xFFFF, SEG_TYPE_TSS_BUSY, s=0)       # KVM's reset TR
    sregs.ldt = seg(0, 0, 0xFFFF, SEG_TYPE_LDT, s=0)           # KVM's reset LDTR
    sregs.gdt.base, sregs.gdt.limit = 0, 0xFFFF
    sregs.idt.base, sregs.idt.limit = IVT_BASE, IDT_LIMIT["real16"]
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = CR0_RESET, 0, 0, 0


def _protected_sregs(sregs: KvmSregs, mode: str) -> None:
    sregs.cs = code64() if mode == "long64" else flat_code32()
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, flat_data())
    sregs.tr = tss_seg()
    sregs.ldt = unusable_seg()
    sregs.gdt.base, sregs.gdt.limit = GDT_BASE, GDT_LIMIT
    sregs.idt.base, sregs.idt.limit = IDT_BASE, IDT_LIMIT[mode]
    if mode == "long64":
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = CR0_LONG64, PML4_BASE, CR4_LONG64, EFER_LONG64
    else:
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = CR0_PROT32, 0, 0, 0


def mode_sregs(sregs: KvmSregs, mode: str) -> None:
    """Step 2 of setup_boot on a kvm_sregs: the segments, tables, CRs and EFER `mode` starts with
    (reset: unchanged).  The scenario checks a `vcpu.sregs` override against this state."""
    if mode == "real16":
        _real16_sregs(sregs)
    elif mode in ("prot32", "long64"):
        _protected_sregs(sregs, mode)


def setup_boot(ram: memoryview, ram_gpa: int, vcpu: VcpuFd, mode: str, entry: int,
               stack_top: int | None = None, user: Sequence[tuple[int, int]] = ()) -> None:
    """Put the vCPU at `entry` in `mode` with the layout in the module docstring.

    1. write the tables the mode needs into RAM (GDT+TSS, zeroed IDT, page tables);
    2. KVM_GET_SREGS, replace segments/descriptor tables/CRs/EFER, KVM_SET_SREGS
       (apic_base and the rest of the reset state stay as KVM made them);
    3. KVM_SET_REGS with RIP = entry, RSP = stack_top, RFLAGS = 0x2, other GPRs 0.
    `user` (long64): (addr, size) ranges of 2 MiB pages marked U/S=1 (scenario paging.user).
    """
    if mode not in MODES:
        raise ScenarioError(None, None, f"unknown guest mode {mode!r} (one of {', '.join(MODES)})")
    if mode == "reset":
        return   # the vCPU stays as KVM's reset left it: the first fetch is at RESET_VECTOR
    if mode == "real16" and not 0 <= entry <= 0xFFFF:
        raise ScenarioError(None, None, f"real16 entry {entry:#x} is not reachable with CS = 0")
    mem = _Ram(memoryview(ram).cast("B"), ram_gpa, mode)
    sregs = vcpu.get_sregs()
    if mode != "real16":
        write_gdt(mem)
        mem.write(IDT_BASE, bytes(IDT_LIMIT[mode] + 1))
        if mode == "long64":
            write_page_tables(mem, user)
    mode_sregs(sregs, mode)
    vcpu.set_sregs(sregs)

    regs = KvmRegs()
    regs.rip = entry
    regs.rsp = DEFAULT_STACK[mode] if stack_top is None else stack_top
    regs.rflags = X86_EFLAGS_FIXED
    vcpu.set_regs(regs)
