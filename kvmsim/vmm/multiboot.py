"""Multiboot (version 1) boot: the userspace VMM's job, as QEMU's `-kernel` does it for an image
with a multiboot header (hw/i386/multiboot.c; our own code, to the Multiboot 0.6.96 spec).

Steps: find the header in the file's first 8 KiB; load the ELF's PT_LOAD segments at their
physical addresses and zero their bss (or, with the header's AOUT_KLUDGE flag, the ranges the
header gives); lay out QEMU's multiboot buffer after the image (the module list, then the module
strings, the command line and the loader name, then each module page-aligned); then hand the vCPU over: boot.py's prot32 state
(flat 4 GiB CS 0x08 / DS 0x10, CR0 = PE|ET|NE, no paging, EFLAGS 0x2) and EAX = 0x2BADB002,
EBX = the info block.  Only guest RAM and KVM_GET/SET_REGS are used, so both backends boot alike.

    GPA              what
    0x2000-0x3fff    prot32 boot tables (boot.py: GDT, TSS, IDT); the guest loads its own
    0x9000-0x94ff    the memory map (QEMU's ADDR_E820_MAP, filled by its option ROM)
    0x9500           the info block, EBX (QEMU's ADDR_MBI)
    image            where its program headers (p_paddr) or the a.out-kludge header say
    buffer           from the first page after the image: the module list, then the strings
    modules          4 KiB-aligned, one after the other, from the first page after the buffer

QEMU's option ROM writes the map and the info block first and copies the image, the buffer and
the modules over them afterwards, so an image linked over 0x9000 (kvm-unit-tests' realmode.flat,
0x8000-0xda30) is loaded and the block under it is lost; the loader here does the same.

The info block's command line is "<kernel> <cmdline>", the kernel named as the scenario writes it
(QEMU passes "<-kernel file> <-append text>"); each module's string is its path as written.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Sequence

from kvmsim.uapi import VcpuFd
from kvmsim.vmm import boot

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002      # EAX at the handoff
MULTIBOOT_SEARCH = 8192                      # the header lies, 4-byte aligned, in the first 8 KiB
MULTIBOOT_HEADER_ALIGN = 4

# Header flags (bits 0-15 are requirements the loader must meet or refuse; 16-31 optional).
MULTIBOOT_PAGE_ALIGN = 1 << 0                # modules on 4 KiB boundaries (we always do that)
MULTIBOOT_MEMORY_INFO = 1 << 1               # mem_* and the memory map (we always give them)
MULTIBOOT_VIDEO_MODE = 1 << 2                # a video mode: ignored, as QEMU does (no vbe_* fields)
MULTIBOOT_AOUT_KLUDGE = 1 << 16              # load from the header's address fields, not the ELF
MULTIBOOT_REQUIRED_KNOWN = MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO | MULTIBOOT_VIDEO_MODE

# Info block flags (which fields are valid).
MULTIBOOT_INFO_MEMORY = 1 << 0
MULTIBOOT_INFO_BOOTDEV = 1 << 1
MULTIBOOT_INFO_CMDLINE = 1 << 2
MULTIBOOT_INFO_MODS = 1 << 3
MULTIBOOT_INFO_MEM_MAP = 1 << 6
MULTIBOOT_INFO_BOOT_LOADER_NAME = 1 << 9
INFO_FLAGS = (MULTIBOOT_INFO_MEMORY | MULTIBOOT_INFO_BOOTDEV | MULTIBOOT_INFO_CMDLINE | MULTIBOOT_INFO_MODS
              | MULTIBOOT_INFO_MEM_MAP | MULTIBOOT_INFO_BOOT_LOADER_NAME)   # the set QEMU gives

# Offsets in the info block (struct multiboot_info), and its size with the framebuffer fields.
MBI_FLAGS, MBI_MEM_LOWER, MBI_MEM_UPPER, MBI_BOOT_DEVICE, MBI_CMDLINE = 0, 4, 8, 12, 16
MBI_MODS_COUNT, MBI_MODS_ADDR, MBI_MMAP_LENGTH, MBI_MMAP_ADDR, MBI_BOOT_LOADER_NAME = 20, 24, 44, 48, 64
MBI_SIZE = 0x80
BOOT_DEVICE_NONE = 0x8000FFFF                # BIOS drive 0x80, no partition (QEMU's value)
BOOT_LOADER_NAME = b"kvmsim"
MMAP_ENTRY = struct.Struct("<IQQI")          # size (of the rest: 20), base_addr, length, type
MODULE_ENTRY = struct.Struct("<IIII")        # mod_start, mod_end, string, reserved
E820_RAM, E820_RESERVED = 1, 2

MMAP_ADDR = 0x9000                           # QEMU's ADDR_E820_MAP
MMAP_MAX = 0x500                             # up to the info block
INFO_ADDR = MMAP_ADDR + MMAP_MAX             # QEMU's ADDR_MBI: EBX at the handoff
PAGE = 0x1000
LOW_MEM_END = 0xA0000                        # mem_lower counts up to 640 KiB
HIGH_MEM_START = 0x100000                    # mem_upper counts from 1 MiB
FOUR_GIB = 1 << 32
MAX_KERNEL_BYTES = 256 << 20                 # not the spec's: what kvmsim reads into host memory
MAX_MODULE_BYTES = 256 << 20
MAX_MODULES = 64

# The GPA ranges nothing may overlap: kvmsim's own boot tables (QEMU's ROM keeps its GDT in the ROM).
# The map and the info block are not among them: the image and the buffer are written over them.
RESERVED = ((boot.GDT_BASE, boot.TABLES_END["prot32"], "the prot32 boot tables (GDT, TSS, IDT)"),)

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64, ELFDATA2LSB = 1, 2, 1
ET_EXEC, EM_386, EM_X86_64, PT_LOAD, SHT_SYMTAB = 2, 3, 62, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
# (header, program header, section header, symbol) layouts by ELF class.
_ELF = {
    ELFCLASS32: (struct.Struct("<HHIIIIIHHHHHH"), struct.Struct("<IIIIIIII"), struct.Struct("<IIIIIIIIII"),
                 struct.Struct("<IIIBBH")),
    ELFCLASS64: (struct.Struct("<HHIQQQIHHHHHH"), struct.Struct("<IIQQQQQQ"), struct.Struct("<IIQQQQIIQQ"),
                 struct.Struct("<IBBHQQ")),
}


class MultibootError(ValueError):
    """A kernel or a placement the loader refuses: `field` names the scenario field to fix
    ("multiboot", "modules", "memory"), `index` the module."""

    def __init__(self, msg: str, field: str = "multiboot", index: int | None = None) -> None:
        super().__init__(msg)
        self.msg, self.field, self.index = msg, field, index


@dataclass(frozen=True)
class Segment:
    """One range the loader fills: `data` at `paddr`, then zeros up to `memsz` (the bss)."""

    paddr: int
    data: bytes
    memsz: int

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


@dataclass(frozen=True)
class MultibootKernel:
    """What parse_kernel found: where to load what, and where to enter."""

    entry: int
    segments: tuple[Segment, ...]
    header_offset: int
    header_flags: int
    elf: bool
    symbols: dict[str, int] = field(default_factory=dict)

    @property
    def low(self) -> int:
        return min(s.paddr for s in self.segments)

    @property
    def end(self) -> int:
        """First byte after the image, bss included."""
        return max(s.end for s in self.segments)


@dataclass(frozen=True)
class RamRange:
    """A memslot as the loader sees it."""

    gpa: int
    size: int
    writable: bool = True


@dataclass(frozen=True)
class BootPlan:
    """Where everything goes: the info block, the buffer (module list and strings) and each
    module's [start, end)."""

    info_addr: int
    buffer_addr: int
    modules: tuple[tuple[int, int], ...]
    mem_lower: int                          # KiB
    mem_upper: int                          # KiB
    mmap: tuple[tuple[int, int, int], ...]  # (base, length, type)


# ---------------------------------------------------------------- the kernel file

def find_header(data: bytes) -> tuple[int, int]:
    """(offset, flags) of the multiboot header: magic, flags, checksum with magic + flags +
    checksum = 0 (mod 2^32), 4-byte aligned in the first 8 KiB."""
    limit = min(len(data), MULTIBOOT_SEARCH) - 12
    for off in range(0, limit + 1, MULTIBOOT_HEADER_ALIGN):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MULTIBOOT_HEADER_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return off, flags
    raise MultibootError(f"no multiboot header (magic {MULTIBOOT_HEADER_MAGIC:#x} with a valid checksum) "
                         f"in the first {MULTIBOOT_SEARCH} bytes")


def parse_kernel(data: bytes) -> MultibootKernel:
    """The segments and entry of a multiboot kernel file, or MultibootError saying why not."""
    off, flags = find_header(data)
    unknown = flags & 0xFFFF & ~MULTIBOOT_REQUIRED_KNOWN
    if unknown:
        raise MultibootError(f"the multiboot header requires features {unknown:#x} (flags {flags:#x}) this "
                             "loader does not provide (it knows bits 0-2)")
    if flags & MULTIBOOT_AOUT_KLUDGE:
        return _parse_aout_kludge(data, off, flags)
    if not data.startswith(ELF_MAGIC):
        raise MultibootError("not an ELF file (and the multiboot header has no AOUT_KLUDGE addresses to "
                             "load it by)")
    return _parse_elf(data, off, flags)


def _parse_aout_kludge(data: bytes, off: int, flags: int) -> MultibootKernel:
    """The header's own addresses: header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr."""
    if off + 32 > len(data):
        raise MultibootError("the multiboot header's AOUT_KLUDGE address fields run past the end of the file")
    header_addr, load_addr, load_end, bss_end, entry = struct.unpack_from("<5I", data, off + 12)
    if header_addr < load_addr or header_addr - load_addr > off:
        raise MultibootError(f"multiboot header_addr {header_addr:#x} and load_addr {load_addr:#x} put the "
                             "load start before the beginning of the file")
    start = off - (header_addr - load_addr)
    size = len(data) - start if load_end == 0 else load_end - load_addr
    if load_end and load_end < load_addr:
        raise MultibootError(f"multiboot load_end_addr {load_end:#x} is below load_addr {load_addr:#x}")
    if start + size > len(data):
        raise MultibootError(f"multiboot load_end_addr {load_end:#x} is past the end of the file")
    memsz = size if bss_end == 0 else bss_end - load_addr
    if memsz < size:
        raise MultibootError(f"multiboot bss_end_addr {bss_end:#x} is below load_end_addr {load_end:#x}")
    seg = Segment(load_addr, bytes(data[start:start + size]), memsz)
    if seg.end > FOUR_GIB or memsz == 0:
        raise MultibootError(f"multiboot load range {load_addr:#x}+{memsz:#x} is empty or ends above 4 GiB")
    return MultibootKernel(entry, (seg,), off, flags, elf=False)


def _parse_elf(data: bytes, off: int, flags: int) -> MultibootKernel:
    if len(data) < 20 or data[4] not in _ELF or data[5] != ELFDATA2LSB:
        raise MultibootError("not a little-endian ELF32 or ELF64 file")
    ehdr, phdr, shdr, sym = _ELF[data[4]]
    if len(data) < 16 + ehdr.size:
        raise MultibootError("the ELF header is truncated")
    (e_type, e_machine, _ver, e_entry, e_phoff, e_shoff, _fl, _ehs, e_phentsize, e_phnum,
     e_shentsize, e_shnum, _shstrndx) = ehdr.unpack_from(data, 16)
    if e_type != ET_EXEC:
        raise MultibootError(f"ELF type {e_type} is not an executable (ET_EXEC)")
    if e_machine not in (EM_386, EM_X86_64):
        raise MultibootError(f"ELF machine {e_machine} is not x86 (EM_386 or EM_X86_64)")
    if e_phnum == 0 or e_phentsize < phdr.size or e_phoff + e_phnum * e_phentsize > len(data):
        raise MultibootError("the ELF program headers are missing or run past the end of the file")
    segments: list[Segment] = []
    vaddrs: list[tuple[int, int, int]] = []      # (vaddr, memsz, paddr): to find the entry's paddr
    for i in range(e_phnum):
        f = phdr.unpack_from(data, e_phoff + i * e_phentsize)
        if data[4] == ELFCLASS32:
            p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = f[:6]
        else:
            p_type, _pf, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = f[:7]
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(data):
            raise MultibootError(f"ELF program header {i}: file bytes {p_offset:#x}+{p_filesz:#x} run past the "
                                 f"end of the file or exceed its memory size {p_memsz:#x}")
        if p_paddr + p_memsz > FOUR_GIB:
            raise MultibootError(f"ELF program header {i}: {p_paddr:#x}+{p_memsz:#x} ends above 4 GiB (a "
                                 "multiboot kernel is loaded below 4 GiB)")
        segments.append(Segment(p_paddr, bytes(data[p_offset:p_offset + p_filesz]), p_memsz))
        vaddrs.append((p_vaddr, p_memsz, p_paddr))
    if not segments:
        raise MultibootError("the ELF file has no loadable (PT_LOAD) segment")
    ordered = sorted(segments, key=lambda s: s.paddr)
    for a, b in zip(ordered, ordered[1:]):
        if b.paddr < a.end:
            raise MultibootError(f"ELF segments {a.paddr:#x}+{a.memsz:#x} and {b.paddr:#x}+{b.memsz:#x} overlap")
    entry = next((p + e_entry - v for v, n, p in vaddrs if v <= e_entry < v + n), e_entry)
    if entry >= FOUR_GIB:
        raise MultibootError(f"ELF entry point {e_entry:#x} is not a 32-bit physical address")
    return MultibootKernel(entry, tuple(ordered), off, flags, elf=True,
                           symbols=_elf_symbols(data, shdr, sym, e_shoff, e_shnum, e_shentsize))


def _elf_symbols(data: bytes, shdr: struct.Struct, sym: struct.Struct, shoff: int, shnum: int,
                 shentsize: int) -> dict[str, int]:
    """Function, object and label symbols of .symtab (for the debugger's names); {} if absent or bad."""
    if shoff == 0 or shentsize < shdr.size or shoff + shnum * shentsize > len(data):
        return {}
    secs = [shdr.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    out: dict[str, int] = {}
    for s in secs:
        if s[1] != SHT_SYMTAB or s[6] >= shnum:
            continue
        off, size, entsize = s[4], s[5], s[9] or sym.size
        str_off, str_size = secs[s[6]][4], secs[s[6]][5]
        if entsize < sym.size or off + size > len(data) or str_off + str_size > len(data):
            return {}
        for i in range(size // entsize):
            f = sym.unpack_from(data, off + i * entsize)
            if sym.size == 16:                       # ELF32: name, value, size, info, other, shndx
                name_off, value, info, shndx = f[0], f[1], f[3], f[5]
            else:                                    # ELF64: name, info, other, shndx, value, size
                name_off, info, shndx, value = f[0], f[1], f[3], f[4]
            if shndx == 0 or info & 0xF not in (STT_NOTYPE, STT_OBJECT, STT_FUNC) or name_off >= str_size:
                continue
            end = data.find(b"\0", str_off + name_off, str_off + str_size)
            name = data[str_off + name_off:end if end >= 0 else str_off + str_size].decode("latin-1")
            if name and not name.startswith(".L"):
                out.setdefault(name, value)
    return out


# ---------------------------------------------------------------- placement

def _merged(ram: Sequence[RamRange]) -> list[tuple[int, int]]:
    """Writable RAM as sorted [start, end) runs, adjacent slots joined."""
    runs: list[tuple[int, int]] = []
    for r in sorted((r for r in ram if r.writable), key=lambda r: r.gpa):
        if runs and runs[-1][1] == r.gpa:
            runs[-1] = (runs[-1][0], r.gpa + r.size)
        else:
            runs.append((r.gpa, r.gpa + r.size))
    return runs


def _in_one_slot(ram: Sequence[RamRange], start: int, end: int) -> bool:
    return any(r.writable and r.gpa <= start and end <= r.gpa + r.size for r in ram)


def memory_map(ram: Sequence[RamRange]) -> tuple[tuple[int, int, int], ...]:
    """The e820-style map: every memslot, RAM as available except the legacy hole 0xa0000-0xfffff
    (reported reserved, as on a PC), read-only slots reserved.  Simplified: no EBDA or ACPI ranges."""
    out: list[tuple[int, int, int]] = []
    for start, end in _merged(ram):
        cuts = sorted({start, end, *(c for c in (LOW_MEM_END, HIGH_MEM_START) if start < c < end)})
        for a, b in zip(cuts, cuts[1:]):
            out.append((a, b - a, E820_RESERVED if LOW_MEM_END <= a < HIGH_MEM_START else E820_RAM))
    out += [(r.gpa, r.size, E820_RESERVED) for r in ram if not r.writable]
    return tuple(sorted(out))


def mem_lower_upper(ram: Sequence[RamRange]) -> tuple[int, int]:
    """(mem_lower, mem_upper) in KiB: RAM from 0 up to 640 KiB, and RAM from 1 MiB up to the
    first hole (below 4 GiB), both contiguous."""
    runs = _merged(ram)
    low = next((min(e, LOW_MEM_END) for s, e in runs if s == 0), 0)
    upper = next((min(e, FOUR_GIB) - HIGH_MEM_START for s, e in runs if s <= HIGH_MEM_START < e), 0)
    return low // 1024, upper // 1024


def _clash(start: int, end: int) -> tuple[int, int, str] | None:
    return next((r for r in RESERVED if start < r[1] and r[0] < end), None)


def plan_boot(kernel: MultibootKernel, module_sizes: Sequence[int], ram: Sequence[RamRange],
              strings_size: int) -> BootPlan:
    """Check that the image fits and place the buffer and the modules (QEMU's layout), as `run` loads them;
    `strings_size`: bytes of the command line and module strings (NULs included)."""
    for s in kernel.segments:
        if not _in_one_slot(ram, s.paddr, s.end):
            raise MultibootError(f"image segment {s.paddr:#x}-{s.end - 1:#x} is not inside one writable "
                                 "memslot (memory:)")
        if (hit := _clash(s.paddr, s.end)) is not None:
            raise MultibootError(f"image segment {s.paddr:#x}-{s.end - 1:#x} overlaps {hit[2]} at {hit[0]:#x}-"
                                 f"{hit[1] - 1:#x}; link it elsewhere (kvm-unit-tests link at 0x400000)")
    if not _in_one_slot(ram, boot.GDT_BASE, boot.TABLES_END["prot32"]):
        raise MultibootError(f"the multiboot handoff needs writable RAM at {boot.GDT_BASE:#x}-"
                             f"{boot.TABLES_END['prot32'] - 1:#x} for the prot32 boot tables", field="memory")
    mmap = memory_map(ram)
    if len(mmap) * MMAP_ENTRY.size > MMAP_MAX:
        raise MultibootError(f"the memory map has {len(mmap)} entries; {MMAP_MAX // MMAP_ENTRY.size} fit at "
                             f"{MMAP_ADDR:#x} below the info block", field="memory")
    if not _in_one_slot(ram, MMAP_ADDR, INFO_ADDR + MBI_SIZE):
        raise MultibootError(f"the multiboot memory map and info block need writable RAM at {MMAP_ADDR:#x}-"
                             f"{INFO_ADDR + MBI_SIZE - 1:#x}", field="memory")
    # Simplified: the buffer starts page-aligned in the address space; QEMU aligns its offset from the
    # image's lowest address, the same for images that start on a page (realmode.flat, a.out kludge).
    buffer_addr = _page_up(kernel.end)
    buffer_end = _page_up(buffer_addr + buffer_size(len(module_sizes), strings_size))
    _check_free(ram, buffer_addr, buffer_end, "the module list and the strings (command line, module names)",
                "cmdline", None)
    placed: list[tuple[int, int]] = []
    cursor = buffer_end
    for i, size in enumerate(module_sizes):
        _check_free(ram, cursor, cursor + size, f"module {i} ({size:#x} bytes)", "modules", i)
        placed.append((cursor, cursor + size))
        cursor = _page_up(cursor + size)
    lower, upper = mem_lower_upper(ram)
    return BootPlan(INFO_ADDR, buffer_addr, tuple(placed), lower, upper, mmap)


def _check_free(ram: Sequence[RamRange], start: int, end: int, what: str, fld: str, index: int | None) -> None:
    """[start, end) must be writable RAM in one memslot, below 4 GiB, off the boot tables."""
    if end > FOUR_GIB or not _in_one_slot(ram, start, max(end, start + 1)) or _clash(start, end) is not None:
        raise MultibootError(f"{what} does not fit in writable RAM below 4 GiB at {start:#x}, after the image "
                             "(and the modules before it)", field=fld, index=index)


def _page_up(v: int) -> int:
    return (v + PAGE - 1) & ~(PAGE - 1)


# ---------------------------------------------------------------- the info area

def buffer_size(n_modules: int, strings_size: int) -> int:
    """Bytes of the buffer after the image: the module list, the strings, the loader name."""
    return n_modules * MODULE_ENTRY.size + strings_size + len(BOOT_LOADER_NAME) + 1


def buffer(plan: BootPlan, cmdline: bytes, module_strings: Sequence[bytes]) -> tuple[bytes, int, int]:
    """The bytes at plan.buffer_addr, in QEMU's order: the module list, each module's string, the
    command line, the loader name; and the addresses of the last two."""
    strings = bytearray()
    str_base = plan.buffer_addr + MODULE_ENTRY.size * len(plan.modules)

    def add(s: bytes) -> int:
        addr = str_base + len(strings)
        strings.extend(s + b"\0")
        return addr

    mods = b"".join(MODULE_ENTRY.pack(start, end, add(s), 0) for (start, end), s in zip(plan.modules, module_strings))
    cmd_addr = add(cmdline)
    name_addr = add(BOOT_LOADER_NAME)
    return mods + bytes(strings), cmd_addr, name_addr


def memory_map_bytes(plan: BootPlan) -> bytes:
    """The map at MMAP_ADDR, each entry with its size field in front (20, as int 15h e820 gives)."""
    return b"".join(MMAP_ENTRY.pack(MMAP_ENTRY.size - 4, b, n, t) for b, n, t in plan.mmap)


def info_block(plan: BootPlan, cmd_addr: int, name_addr: int) -> bytes:
    """The struct multiboot_info at plan.info_addr."""
    info = bytearray(MBI_SIZE)
    for off, value in ((MBI_FLAGS, INFO_FLAGS), (MBI_MEM_LOWER, plan.mem_lower), (MBI_MEM_UPPER, plan.mem_upper),
                       (MBI_BOOT_DEVICE, BOOT_DEVICE_NONE), (MBI_CMDLINE, cmd_addr),
                       (MBI_MODS_COUNT, len(plan.modules)), (MBI_MODS_ADDR, plan.buffer_addr),
                       (MBI_MMAP_LENGTH, len(plan.mmap) * MMAP_ENTRY.size), (MBI_MMAP_ADDR, MMAP_ADDR),
                       (MBI_BOOT_LOADER_NAME, name_addr)):
        struct.pack_into("<I", info, off, value)
    return bytes(info)


# ---------------------------------------------------------------- loading and the handoff

def _write(ram: Sequence[tuple[int, memoryview]], gpa: int, data: bytes | memoryview) -> None:
    for base, buf in ram:
        if base <= gpa and gpa + len(data) <= base + len(buf):
            buf[gpa - base:gpa - base + len(data)] = data
            return
    raise MultibootError(f"{gpa:#x}+{len(data):#x} is not inside one memslot", field="memory")


_ZERO_CHUNK = bytes(1 << 20)


def _zero(ram: Sequence[tuple[int, memoryview]], gpa: int, n: int) -> None:
    """n zero bytes from gpa, a MiB at a time (a bss may be most of RAM)."""
    while n > 0:
        k = min(n, len(_ZERO_CHUNK))
        _write(ram, gpa, memoryview(_ZERO_CHUNK)[:k])
        gpa, n = gpa + k, n - k


def load(ram: Sequence[tuple[int, memoryview]], kernel: MultibootKernel, plan: BootPlan, cmdline: bytes,
         modules: Sequence[tuple[bytes, bytes]]) -> None:
    """Fill guest RAM in the option ROM's order: the memory map and the info block, then each
    segment's bytes and zeroed bss, the buffer, each module (string, contents) at its planned place.
    `ram`: (gpa, writable byte view) of each memslot."""
    buf, cmd_addr, name_addr = buffer(plan, cmdline, [name for name, _ in modules])
    _write(ram, MMAP_ADDR, memory_map_bytes(plan))
    _write(ram, plan.info_addr, info_block(plan, cmd_addr, name_addr))
    for s in kernel.segments:
        _write(ram, s.paddr, s.data)
        if s.memsz > len(s.data):
            _zero(ram, s.paddr + len(s.data), s.memsz - len(s.data))
    _write(ram, plan.buffer_addr, buf)
    for (start, _end), (_name, data) in zip(plan.modules, modules):
        _write(ram, start, data)


def handoff(vcpu: VcpuFd, info_addr: int) -> None:
    """After boot.setup_boot(mode prot32, entry): the registers the spec defines at the entry."""
    regs = vcpu.get_regs()
    regs.rax = MULTIBOOT_BOOTLOADER_MAGIC
    regs.rbx = info_addr
    vcpu.set_regs(regs)
