"""A tiny VMM for probing the real /dev/kvm: assemble a guest, boot it in a mode, record exits.

Boot setup is our own minimal one (flat GDT, identity paging) until kvmsim/vmm/boot.py exists.
Every run is bounded twice: by an exit count, and by RealVcpu.run_timeout per KVM_RUN.
"""

from __future__ import annotations

import mmap
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kvmsim.realkvm.backend import RealKvm, RealVcpu, RealVm
from kvmsim.uapi import KvmExit, KvmSegment

RAM_SIZE = 0x400000          # 4 MiB at GPA 0
ENTRY = 0x1000               # guest code
GDT, IDT = 0x500, 0x800      # descriptor tables
PML4 = 0x10000               # 0x10000 PML4, 0x11000 PDPT, 0x12000..0x15000 PDs (4 GiB of 2 MiB pages)
STACK_TOP = 0x8000
MMIO = 0xD0000000            # no memslot here

CR0_PE, CR0_ET, CR0_NE, CR0_PG = 1 << 0, 1 << 4, 1 << 5, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_OSXSAVE = 1 << 5, 1 << 9, 1 << 10, 1 << 18
EFER_LME, EFER_LMA = 1 << 8, 1 << 10

HAVE_BINUTILS = all(shutil.which(t) for t in ("as", "ld", "objcopy"))


def assemble(src: str, bits: int, org: int = ENTRY) -> bytes:
    """GNU as + ld at `org` + objcopy to a flat binary."""
    code = {16: ".code16", 32: ".code32", 64: ".code64"}[bits]
    as_arch, ld_emul = (["--64"], "elf_x86_64") if bits == 64 else (["--32"], "elf_i386")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        (p / "g.S").write_text(f".intel_syntax noprefix\n{code}\n.globl _start\n_start:\n{src}\n")
        r = subprocess.run(["as", *as_arch, "-o", p / "g.o", p / "g.S"], capture_output=True, text=True)
        if r.returncode:
            raise ValueError(f"guest does not assemble:\n{r.stderr}")
        subprocess.run(["ld", "-m", ld_emul, "-Ttext", hex(org), "-e", "_start", "-o", p / "g.elf", p / "g.o"],
                       check=True, capture_output=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", p / "g.elf", p / "g.bin"],
                       check=True, capture_output=True)
        return (p / "g.bin").read_bytes()


@dataclass
class Exit:
    """One KVM_RUN return as userspace saw it."""

    reason: str                 # KVM_EXIT_* name, or "-EINTR" etc. for a negative return
    rip: int                    # guest RIP when userspace got control
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Exit({self.reason}, rip={self.rip:#x}, {self.info})"


# A handler can fill in data for an exit before the next KVM_RUN; returning False stops the run.
ExitHandler = Callable[["Guest", Exit], "bool | None"]


def _seg(selector: int, typ: int, *, code64: bool = False, db: int = 1) -> KvmSegment:
    return KvmSegment(base=0, limit=0xFFFFFFFF, selector=selector, type=typ, present=1, dpl=0,
                      db=0 if code64 else db, s=1, l=int(code64), g=1)


class Guest:
    """One VM with 4 MiB of RAM at 0, one vCPU, a guest at ENTRY in `mode` (real16/prot32/long64)."""

    def __init__(self, kvm: RealKvm, mode: str, src: str, *, setup: Callable[[RealVm], None] | None = None) -> None:
        self.kvm, self.mode = kvm, mode
        self.vm = kvm.create_vm()
        if setup:
            setup(self.vm)
        self.ram = mmap.mmap(-1, RAM_SIZE)
        self.vm.set_user_memory_region(0, 0, memoryview(self.ram))
        self.vcpu: RealVcpu = self.vm.create_vcpu(0)
        bits = {"real16": 16, "prot32": 32, "long64": 64}[mode]
        self.code = assemble(src, bits)
        self.ram[ENTRY:ENTRY + len(self.code)] = self.code
        self._boot()
        self.exits: list[Exit] = []

    def _boot(self) -> None:
        s = self.vcpu.get_sregs()
        if self.mode == "real16":
            s.cs.selector, s.cs.base = 0, 0
        else:
            gdt = [0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00AF9A000000FFFF]  # null, code32, data, code64
            self.ram[GDT:GDT + 8 * len(gdt)] = struct.pack(f"<{len(gdt)}Q", *gdt)
            s.gdt.base, s.gdt.limit = GDT, 8 * len(gdt) - 1
            data = _seg(0x10, 3)
            s.ds = s.es = s.fs = s.gs = s.ss = data
            s.cr0 = CR0_PE | CR0_ET | CR0_NE
            s.cr4 = CR4_OSFXSR | CR4_OSXMMEXCPT
            s.cs = _seg(0x08, 11)
            if self.mode == "long64":
                self._identity_map()
                s.cs = _seg(0x18, 11, code64=True)
                s.cr3, s.cr4 = PML4, s.cr4 | CR4_PAE
                s.cr0 |= CR0_PG
                s.efer = EFER_LME | EFER_LMA
        self.vcpu.set_sregs(s)
        r = self.vcpu.get_regs()
        r.rip, r.rflags, r.rsp = ENTRY, 2, STACK_TOP
        self.vcpu.set_regs(r)

    def _identity_map(self) -> None:
        pdpt = PML4 + 0x1000
        self.ram[PML4:PML4 + 8] = struct.pack("<Q", pdpt | 3)
        for i in range(4):
            pd = pdpt + 0x1000 * (i + 1)
            self.ram[pdpt + 8 * i:pdpt + 8 * i + 8] = struct.pack("<Q", pd | 3)
            self.ram[pd:pd + 0x1000] = struct.pack("<512Q", *(((i << 30) + (j << 21)) | 0x83 for j in range(512)))

    def set_idt_entry(self, vector: int, handler: int) -> None:
        """An interrupt gate for `handler` (prot32: 8-byte gates at IDT; long64: 16-byte gates)."""
        s = self.vcpu.get_sregs()
        if self.mode == "long64":
            e = struct.pack("<HHBBHIi", handler & 0xFFFF, 0x18, 0, 0x8E, (handler >> 16) & 0xFFFF, handler >> 32, 0)
            s.idt.base, s.idt.limit = IDT, 16 * 256 - 1
        else:
            e = struct.pack("<HHBBH", handler & 0xFFFF, 0x08, 0, 0x8E, handler >> 16)
            s.idt.base, s.idt.limit = IDT, 8 * 256 - 1
        self.ram[IDT + len(e) * vector:IDT + len(e) * (vector + 1)] = e
        self.vcpu.set_sregs(s)

    def symbol(self, marker: bytes) -> int:
        """Guest address of the first occurrence of `marker` in the code."""
        return ENTRY + self.code.index(marker)

    def run(self, max_exits: int = 50, handler: ExitHandler | None = None,
            stop: tuple[str, ...] = ("KVM_EXIT_HLT", "KVM_EXIT_SHUTDOWN", "KVM_EXIT_INTERNAL_ERROR",
                                     "KVM_EXIT_FAIL_ENTRY", "KVM_EXIT_UNKNOWN")) -> list[Exit]:
        """KVM_RUN until a stop exit, a handler returning False, a timeout, or max_exits."""
        for _ in range(max_exits):
            r = self.vcpu.run()
            e = self._record(r)
            self.exits.append(e)
            if r < 0 or e.reason in stop or self.vcpu.timed_out:
                break
            if handler is not None and handler(self, e) is False:
                break
        return self.exits

    def _record(self, r: int) -> Exit:
        run = self.vcpu.mapping.run
        rip = self.vcpu.get_regs().rip
        if r < 0:
            return Exit({-4: "-EINTR", -11: "-EAGAIN"}.get(r, str(r)), rip, {"exit_reason": run.exit_reason})
        try:
            name = KvmExit(run.exit_reason).kname
        except ValueError:
            name = f"KVM_EXIT_{run.exit_reason}"
        info: dict = {}
        if run.exit_reason == KvmExit.IO:
            io = run.io
            info = dict(direction=io.direction, size=io.size, port=io.port, count=io.count,
                        data_offset=io.data_offset, data=bytes(self.vcpu.mapping.io_data()))
        elif run.exit_reason == KvmExit.MMIO:
            m = run.mmio
            info = dict(phys_addr=m.phys_addr, len=m.len, is_write=m.is_write, data=bytes(m.data[:m.len]))
        elif run.exit_reason == KvmExit.INTERNAL_ERROR:
            i = run.internal
            info = dict(suberror=i.suberror, ndata=i.ndata, data=[i.data[k] for k in range(min(i.ndata, 16))])
            if i.suberror == 1 and i.ndata >= 3:
                ef = run.emulation_failure
                info.update(flags=ef.flags, insn=bytes(ef.insn_bytes[:ef.insn_size]))
        elif run.exit_reason in (KvmExit.X86_RDMSR, KvmExit.X86_WRMSR):
            info = dict(reason=run.msr.reason, index=run.msr.index, data=run.msr.data)
        elif run.exit_reason == KvmExit.FAIL_ENTRY:
            info = dict(reason=run.fail_entry.hardware_entry_failure_reason, cpu=run.fail_entry.cpu)
        elif run.exit_reason == KvmExit.UNKNOWN:
            info = dict(hardware_exit_reason=run.hw.hardware_exit_reason)
        elif run.exit_reason == KvmExit.HYPERCALL:
            info = dict(nr=run.hypercall.nr)
        return Exit(name, rip, info)

    def reasons(self) -> list[str]:
        return [e.reason for e in self.exits]

    def regs(self) -> dict[str, int]:
        return self.vcpu.get_regs().as_dict()

    def close(self) -> None:
        self.vm.close()
        try:
            self.ram.close()
        except BufferError:
            pass

    def __enter__(self) -> "Guest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fill_in(value: int) -> ExitHandler:
    """A handler that answers every IN / MMIO read with `value` (little-endian, truncated)."""
    def h(g: Guest, e: Exit) -> None:
        run = g.vcpu.mapping.run
        if e.reason == "KVM_EXIT_IO" and e.info["direction"] == 0:
            n = e.info["size"] * e.info["count"]
            g.vcpu.mapping.buf[e.info["data_offset"]:e.info["data_offset"] + n] = \
                (value.to_bytes(8, "little") * ((n + 7) // 8))[:n]
        elif e.reason == "KVM_EXIT_MMIO" and not e.info["is_write"]:
            run.mmio.data[:8] = list(value.to_bytes(8, "little"))
    return h
