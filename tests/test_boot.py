"""vmm/boot.py: the tables setup_boot writes and the sregs/regs it sets agree with each other."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from kvmsim.errors import ScenarioError
from kvmsim.uapi import KvmRegs, KvmSegment, KvmSregs
from kvmsim.vmm import boot

RAM_SIZE = 2 << 20
APIC_BASE = 0xFEE00900


class FakeVcpu:
    """Records KVM_SET_SREGS / KVM_SET_REGS; KVM_GET_SREGS returns a reset-like state."""

    def __init__(self) -> None:
        self.sregs: KvmSregs | None = None
        self.regs: KvmRegs | None = None

    def get_sregs(self) -> KvmSregs:
        s = KvmSregs()
        s.apic_base = APIC_BASE
        s.cs = boot.seg(0xF000, 0xFFFF0000, 0xFFFF, 0xB)  # KVM's reset CS
        return s

    def set_sregs(self, sregs: KvmSregs) -> None:
        self.sregs = sregs

    def get_regs(self) -> KvmRegs:
        return self.regs or KvmRegs()

    def set_regs(self, regs: KvmRegs) -> None:
        self.regs = regs


def booted(mode: str, entry: int | None = None, stack_top: int | None = None,
           ram_size: int = RAM_SIZE) -> tuple[FakeVcpu, bytearray]:
    ram = bytearray(b"\xcc" * ram_size)  # poison: tables must be fully written
    vcpu = FakeVcpu()
    boot.setup_boot(memoryview(ram), 0, vcpu, mode,
                    boot.DEFAULT_ORIGIN.get(mode, 0) if entry is None else entry, stack_top)
    return vcpu, ram


def qword(ram: bytearray, gpa: int) -> int:
    return struct.unpack_from("<Q", ram, gpa)[0]


def seg_fields(sg: KvmSegment) -> dict[str, int]:
    d = sg.as_dict()
    return {k: d[k] for k in ("base", "limit", "type", "s", "dpl", "present", "avl", "l", "db", "g")}


def walk(ram: bytearray, cr3: int, va: int) -> int:
    """4-level walk honouring 2 MiB pages; asserts P and RW on the way."""
    pml4e = qword(ram, cr3 + ((va >> 39) & 0x1FF) * 8)
    assert pml4e & 3 == 3
    pdpte = qword(ram, (pml4e & ~0xFFF & (1 << 52) - 1) + ((va >> 30) & 0x1FF) * 8)
    assert pdpte & 3 == 3 and not pdpte & boot.PTE_LARGE
    pde = qword(ram, (pdpte & ~0xFFF & (1 << 52) - 1) + ((va >> 21) & 0x1FF) * 8)
    assert pde & 3 == 3 and pde & boot.PTE_LARGE
    return (pde & ~(boot.LARGE_PAGE_SIZE - 1) & (1 << 52) - 1) | (va & (boot.LARGE_PAGE_SIZE - 1))


def test_real16_overrides_reset_cs_and_keeps_apic_base() -> None:
    vcpu, ram = booted("real16")
    s, r = vcpu.sregs, vcpu.regs
    for name in ("cs", "ds", "es", "fs", "gs", "ss"):
        sg = getattr(s, name)
        assert (sg.selector, sg.base, sg.limit, sg.present, sg.s) == (0, 0, 0xFFFF, 1, 1), name
    assert s.cs.type == 0xB and s.ss.type == 0x3
    assert s.cr0 == 0x60000010 and not s.cr0 & boot.X86_CR0_PE
    assert (s.idt.base, s.idt.limit) == (0, 0x3FF)
    assert s.apic_base == APIC_BASE
    assert (r.rip, r.rsp, r.rflags) == (0x1000, 0x7C00, 0x2)
    assert ram[boot.GDT_BASE] == 0xCC  # real16 writes no tables


@pytest.mark.parametrize("mode", ["prot32", "long64"])
def test_gdt_descriptors_decode_to_the_sregs(mode: str) -> None:
    vcpu, ram = booted(mode)
    s = vcpu.sregs
    assert (s.gdt.base, s.gdt.limit) == (boot.GDT_BASE, boot.GDT_LIMIT)
    for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr"):
        sg = getattr(s, name)
        desc = qword(ram, boot.GDT_BASE + sg.selector)
        assert boot.decode_descriptor(desc) == seg_fields(sg), name
    assert qword(ram, boot.GDT_BASE) == 0
    assert qword(ram, boot.GDT_BASE + boot.KERNEL_TSS + 8) == 0  # TSS base 63:32
    assert s.ldt.unusable == 1
    assert s.tr.base == boot.TSS_BASE and s.tr.type == 0xB and s.tr.s == 0
    assert ram[boot.TSS_BASE:boot.TSS_BASE + 0x66] == bytes(0x66)
    # The two flat descriptors the selftests use: 0x00cf9b000000ffff / 0x00cf93000000ffff.
    assert qword(ram, boot.GDT_BASE + 0x08) == 0x00CF9B000000FFFF
    assert qword(ram, boot.GDT_BASE + 0x10) == 0x00CF93000000FFFF
    assert qword(ram, boot.GDT_BASE + 0x18) == 0x00AF9B000000FFFF


def test_prot32_state() -> None:
    vcpu, ram = booted("prot32")
    s, r = vcpu.sregs, vcpu.regs
    assert s.cs.selector == 0x08 and s.cs.db == 1 and s.cs.l == 0
    assert all(getattr(s, n).selector == 0x10 for n in ("ds", "es", "fs", "gs", "ss"))
    assert (s.cr0, s.cr3, s.cr4, s.efer) == (0x31, 0, 0, 0)
    assert (s.idt.base, s.idt.limit) == (0x3000, 0x7FF)
    assert ram[0x3000:0x3800] == bytes(0x800)
    assert (r.rip, r.rsp, r.rflags) == (0x100000, 0x80000, 0x2)
    assert ram[boot.PML4_BASE] == 0xCC  # no page tables in prot32


def test_long64_state_and_identity_map() -> None:
    vcpu, ram = booted("long64")
    s, r = vcpu.sregs, vcpu.regs
    assert s.cs.selector == 0x18 and (s.cs.l, s.cs.db) == (1, 0)
    assert (s.cr0, s.cr3, s.cr4, s.efer) == (0x80050033, 0x4000, 0x620, 0x500)
    assert (s.idt.base, s.idt.limit) == (0x3000, 0xFFF)
    assert ram[0x3000:0x4000] == bytes(0x1000)
    assert (r.rip, r.rsp, r.rflags) == (0x100000, 0x80000, 0x2)
    for va in (0, 0x1000, 0x100000, 0x1FFFFF, 0x200000, 0x12345678, 0xD0000000, 0xFFFFFFFF):
        assert walk(ram, s.cr3, va) == va
    assert qword(ram, boot.PML4_BASE + 8) == 0            # nothing above 512 GiB
    assert qword(ram, boot.PDPT_BASE + 4 * 8) == 0        # nothing above 4 GiB


def test_stack_top_and_entry_are_honoured() -> None:
    vcpu, _ = booted("long64", entry=0x100040, stack_top=0x1F0000)
    assert (vcpu.regs.rip, vcpu.regs.rsp) == (0x100040, 0x1F0000)


def test_too_little_ram_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError, match="need RAM at GPA"):
        booted("long64", ram_size=0x8000)


def test_unknown_mode_and_unreachable_real16_entry() -> None:
    with pytest.raises(ScenarioError, match="unknown guest mode"):
        booted("vm86")
    with pytest.raises(ScenarioError, match="not reachable"):
        booted("real16", entry=0x100000)


def test_constants_match_the_guest_library() -> None:
    """guests/lib/kvmsim.inc hard-codes the layout; keep the two in step."""
    text = (Path(boot.__file__).resolve().parents[2] / "guests" / "lib" / "kvmsim.inc").read_text()
    for name, value in (("KVMSIM_IDT_BASE", boot.IDT_BASE), ("KVMSIM_GDT_BASE", boot.GDT_BASE),
                        ("KVMSIM_KERNEL_CS32", boot.KERNEL_CS32), ("KVMSIM_KERNEL_DS", boot.KERNEL_DS),
                        ("KVMSIM_KERNEL_CS64", boot.KERNEL_CS64)):
        m = re.search(rf"^{name}\s*=\s*(0x[0-9a-fA-F]+)", text, re.MULTILINE)
        assert m and int(m.group(1), 16) == value, name
