"""One x86-64 CPU for every mode, its descriptor caches, and the reset state of a new vCPU.

Each test runs on the sim and, where /dev/kvm exists, on the real kernel (the `kvm` marker);
both must give the same registers, descriptor caches and exits.  The expected values come
from the architecture (SDM vol. 3 table 10-1; KVM's kvm_vcpu_reset/vmx_vcpu_reset), not from
either backend.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, Iterator

import pytest

from kvmsim.kvm.kvm_main import SimKvm
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import make_machine
from kvmsim.scenario.schema import Scenario
from kvmsim.uapi import KVM_MEM_READONLY, KvmExit, KvmRegs, KvmSregs
from kvmsim.vmm import boot
from backends import BACKENDS

ROOT = Path(__file__).resolve().parents[1]

ROM_GPA, ROM_SIZE = 0xFFFF0000, 0x10000


def _open_vm(backend: str) -> Any:
    if backend == "sim":
        return SimKvm().create_vm()
    from kvmsim.realkvm.backend import RealKvm
    return RealKvm().create_vm(owns_kvm=True)


def _regs_dict(r: KvmRegs) -> dict[str, int]:
    return {n: getattr(r, n) for n, _ in r._fields_}


def _sregs_dict(s: KvmSregs) -> dict[str, Any]:
    out: dict[str, Any] = {n: getattr(s, n).as_dict() for n in KvmSregs.SEGMENTS}
    out.update({d: (getattr(s, d).base, getattr(s, d).limit) for d in ("gdt", "idt")})
    out.update({n: getattr(s, n) for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")})
    out["interrupt_bitmap"] = list(s.interrupt_bitmap)
    return out


def _seg(base: int, limit: int, selector: int, type_: int, s: int) -> dict[str, int]:
    return {"base": base, "limit": limit, "selector": selector, "type": type_, "present": 1, "dpl": 0,
            "db": 0, "s": s, "l": 0, "g": 0, "avl": 0, "unusable": 0}


# SDM vol. 3 table 10-1 as KVM's seg_setup/vmx_vcpu_reset/kvm_vcpu_reset write it.
RESET_SREGS = {
    "cs": _seg(0xFFFF0000, 0xFFFF, 0xF000, 0xB, 1),
    **{n: _seg(0, 0xFFFF, 0, 0x3, 1) for n in ("ds", "es", "fs", "gs", "ss")},
    "tr": _seg(0, 0xFFFF, 0, 0xB, 0), "ldt": _seg(0, 0xFFFF, 0, 0x2, 0),
    "gdt": (0, 0xFFFF), "idt": (0, 0xFFFF),
    "cr0": 0x60000010, "cr2": 0, "cr3": 0, "cr4": 0, "cr8": 0, "efer": 0, "apic_base": 0xFEE00900,
    "interrupt_bitmap": [0, 0, 0, 0],
}
RESET_REGS = {**{n: 0 for n, _ in KvmRegs._fields_}, "rip": 0xFFF0, "rflags": 0x2, "rdx": 0x600}


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_vcpu_is_in_the_architectural_reset_state(backend: str) -> None:
    vm = _open_vm(backend)
    try:
        vcpu = vm.create_vcpu(0)
        assert _regs_dict(vcpu.get_regs()) == RESET_REGS
        assert _sregs_dict(vcpu.get_sregs()) == RESET_SREGS
    finally:
        vm.close()


@pytest.mark.kvm
@pytest.mark.kvm
def test_new_vcpu_state_equals_real_kvm_field_by_field() -> None:
    sim, real = _open_vm("sim"), _open_vm("kvm")
    try:
        a, b = sim.create_vcpu(0), real.create_vcpu(0)
        assert _regs_dict(a.get_regs()) == _regs_dict(b.get_regs())
        assert _sregs_dict(a.get_sregs()) == _sregs_dict(b.get_sregs())
    finally:
        sim.close()
        real.close()


class _RomVm:
    """RAM at 0 and a KVM_MEM_READONLY ROM in the 64 KiB below 4 GiB, code at the reset vector."""

    def __init__(self, backend: str, reset_code: bytes, rom_bytes: dict[int, bytes] | None = None) -> None:
        self.vm = _open_vm(backend)
        self.ram, self.rom = mmap.mmap(-1, 0x200000), mmap.mmap(-1, ROM_SIZE)
        self.rom[0xFFF0:0xFFF0 + len(reset_code)] = reset_code
        for off, data in (rom_bytes or {}).items():
            self.rom[off:off + len(data)] = data
        self.vm.set_user_memory_region(0, 0, memoryview(self.ram))
        self.vm.set_user_memory_region(1, ROM_GPA, memoryview(self.rom), KVM_MEM_READONLY)
        self.vcpu = self.vm.create_vcpu(0)

    def run(self, expect: KvmExit) -> Any:
        assert self.vcpu.run() == 0
        run = self.vcpu.mapping.run
        assert KvmExit(run.exit_reason) == expect, KvmExit(run.exit_reason).name
        return run

    def close(self) -> None:
        self.vm.close()


@pytest.fixture
def rom_vm() -> Iterator[list[_RomVm]]:
    made: list[_RomVm] = []
    yield made
    for v in made:
        v.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmm_without_any_set_up_runs_from_the_reset_vector(backend: str, rom_vm: list[_RomVm]) -> None:
    """A minimal real-mode VMM: memory, a vCPU, KVM_RUN; the first fetch is at 0xfffffff0."""
    # mov $0x41,%al; out %al,$0x80; hlt
    v = _RomVm(backend, bytes.fromhex("b041" "e680" "f4"))
    rom_vm.append(v)
    run = v.run(KvmExit.IO)
    assert (run.io.direction, run.io.size, run.io.port, run.io.count) == (1, 1, 0x80, 1)
    assert v.vcpu.mapping.buf[run.io.data_offset] == 0x41
    v.run(KvmExit.HLT)
    assert v.vcpu.get_sregs().cs.base == 0xFFFF0000


@pytest.mark.parametrize("backend", BACKENDS)
def test_write_to_a_readonly_memslot_exits_as_mmio_and_reads_stay_ram(backend: str, rom_vm: list[_RomVm]) -> None:
    # mov $0xa5,%al; mov %al,%cs:0x1000; mov %cs:0x1000,%bl; hlt
    v = _RomVm(backend, bytes.fromhex("b0a5" "2ea20010" "2e8a1e0010" "f4"), {0x1000: b"\x5a"})
    rom_vm.append(v)
    run = v.run(KvmExit.MMIO)
    assert (run.mmio.phys_addr, run.mmio.len, run.mmio.is_write, run.mmio.data[0]) == (0xFFFF1000, 1, 1, 0xA5)
    v.run(KvmExit.HLT)
    assert v.vcpu.get_regs().rbx & 0xFF == 0x5A and v.rom[0x1000] == 0x5A


def _machine(asm: str, mode: str, backend: str, **extra: Any) -> Any:
    doc = {"name": "t", "description": "t", "guest": {"asm": asm, "mode": mode},
           "devices": [{"type": "debug-exit", "port": 0xF4}, {"type": "regbank", "gpa": 0xD0000000}], **extra}
    return make_machine(Scenario.model_validate(doc), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_sregs_moves_the_cpu_between_modes_at_any_time(backend: str) -> None:
    """long64 -> real mode -> long64 by KVM_SET_SREGS alone; registers keep all 64 bits meanwhile."""
    m = _machine("out %al, $0x80\nhlt\n.org 0x10\n.code16\nout %al, $0x81\nhlt\n", "long64", backend)
    try:
        long_sregs = m.vcpu.get_sregs()
        regs = m.vcpu.get_regs()
        regs.rax, regs.r9 = 0x0123456789ABCDEF, 0xFEDCBA9876543210
        m.vcpu.set_regs(regs)
        assert m.vcpu.run() == 0 and m.vcpu.mapping.run.io.port == 0x80
        real = m.vcpu.get_sregs()
        boot._real16_sregs(real)
        real.cs.selector, real.cs.base = 0xFFFF, 0xFFFF0       # CS:IP ffff:0020 = linear 0x100010
        m.vcpu.set_sregs(real)
        regs = m.vcpu.get_regs()
        regs.rip = 0x20
        m.vcpu.set_regs(regs)
        got = m.vcpu.get_sregs()
        assert got.cs.as_dict() == real.cs.as_dict() and got.cr0 == boot.CR0_RESET and got.efer == 0
        assert m.vcpu.run() == 0 and m.vcpu.mapping.run.io.port == 0x81
        regs = m.vcpu.get_regs()
        assert (regs.rax, regs.r9) == (0x0123456789ABCDEF, 0xFEDCBA9876543210)
        m.vcpu.set_sregs(long_sregs)
        got = m.vcpu.get_sregs()
        assert (got.cs.l, got.efer, got.cr0) == (1, long_sregs.efer, long_sregs.cr0)
    finally:
        m.close()


MODE_SWITCH = ROOT / "scenarios" / "mode-switch-real-to-long.yaml"


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_enters_long_mode_itself_and_its_caches_say_so(backend: str) -> None:
    """From the reset vector to 64-bit mode by the guest's own LGDT/MOV CR0/WRMSR/far JMPs: at the
    8-byte MMIO write, CS.L = 1 from the descriptor cache, EFER.LMA, and all 64 bits of RAX."""
    m = make_machine(load_scenario(MODE_SWITCH), backend)
    try:
        assert m.vcpu.run() == 0
        run = m.vcpu.mapping.run
        assert KvmExit(run.exit_reason) == KvmExit.MMIO, KvmExit(run.exit_reason).name
        assert (run.mmio.phys_addr, run.mmio.len, run.mmio.is_write) == (0xD0000000, 8, 1)
        assert bytes(run.mmio.data) == bytes.fromhex("efcdab8967452301")
        s = m.vcpu.get_sregs()
        assert (s.cs.selector, s.cs.l, s.cs.db, s.cs.base) == (0x18, 1, 0, 0)
        assert s.efer & 0x500 == 0x500
        assert (s.ds.selector, s.ds.limit, s.ds.db, s.ds.g) == (0x10, 0xFFFFFFFF, 1, 1)
        assert m.vcpu.get_regs().rax == 0x0123456789ABCDEF
    finally:
        m.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_mode_switch_control_registers_reach_kvm_get_sregs(backend: str) -> None:
    m = make_machine(load_scenario(MODE_SWITCH), backend)
    try:
        assert m.vcpu.run() == 0 and KvmExit(m.vcpu.mapping.run.exit_reason) == KvmExit.MMIO
        s = m.vcpu.get_sregs()
        assert (s.cr0 & 0x80000001, s.cr4 & 0x20, s.cr3) == (0x80000001, 0x20, 0x10000)
    finally:
        m.close()


BIG_REAL = ROOT / "scenarios" / "big-real-mode.yaml"


@pytest.mark.parametrize("backend", BACKENDS)
def test_big_real_mode_caches_outlive_the_gdt(backend: str) -> None:
    """At big-real-mode's MMIO exit: real mode, DS selector 0 base 0 with the 4 GiB limit it got in
    protected mode from a GDT that no longer exists (GDTR limit 0)."""
    m = make_machine(load_scenario(BIG_REAL), backend)
    try:
        assert m.vcpu.run() == 0
        assert KvmExit(m.vcpu.mapping.run.exit_reason) == KvmExit.MMIO
        s = m.vcpu.get_sregs()
        assert s.cr0 & 1 == 0 and s.gdt.limit == 0
        assert (s.ds.selector, s.ds.base, s.ds.limit, s.ds.g, s.ds.db) == (0, 0, 0xFFFFFFFF, 1, 1)
        assert (s.es.selector, s.es.limit) == (0x08, 0xFFFFFFFF)
    finally:
        m.close()


LDT_TR_ASM = """
        movl    $gdt, %eax
        movl    %eax, gdt_ptr + 2
        lgdtl   gdt_ptr
        movw    $0x08, %ax
        lldt    %ax
        movw    $0x10, %ax
        ltr     %ax
        movl    $0, %eax
        outl    %eax, $0xf4
        hlt
        .balign 8
gdt:    .quad   0
        .quad   0x0000820050000037          # 0x08 LDT: base 0x5000, limit 0x37
        .quad   0x0000890060000067          # 0x10 available 32-bit TSS: base 0x6000, limit 0x67
gdt_ptr: .word  23
        .long   0
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_lldt_and_ltr_load_the_ldtr_and_tr_caches(backend: str) -> None:
    m = _machine(LDT_TR_ASM, "prot32", backend)
    try:
        assert m.vcpu.run() == 0
        assert KvmExit(m.vcpu.mapping.run.exit_reason) == KvmExit.IO
        s = m.vcpu.get_sregs()
        ldt, tr = s.ldt, s.tr
        assert (ldt.selector, ldt.base, ldt.limit, ldt.type, ldt.s, ldt.present, ldt.unusable) == \
            (0x08, 0x5000, 0x37, 0x2, 0, 1, 0)
        assert (tr.selector, tr.base, tr.limit, tr.type, tr.s, tr.present) == (0x10, 0x6000, 0x67, 0xB, 0, 1)
    finally:
        m.close()


@pytest.mark.parametrize("path", [MODE_SWITCH, BIG_REAL], ids=lambda p: p.stem)
def test_recomputed_translation_flags_equal_the_ones_tcg_computed_itself(path: Path) -> None:
    """kvmsim recomputes QEMU's hflags after writing a descriptor cache (cpux86.update_hflags);
    at an exit after the guest's own mode switches, TCG's values and the recomputed ones agree."""
    from kvmsim.hw.cpux86 import update_hflags

    m = make_machine(load_scenario(path), "sim")
    try:
        assert m.vcpu.run() == 0 and KvmExit(m.vcpu.mapping.run.exit_reason) == KvmExit.MMIO
        env = m.vcpu.vcpu.hw._env
        before = env.hflags
        update_hflags(env)
        assert env.hflags == before
    finally:
        m.close()


_VMX_UNUSABLE_AR = {"type": 0, "present": 0, "dpl": 0, "db": 0, "s": 0, "l": 0, "g": 0, "avl": 0, "unusable": 1}


@pytest.mark.kvm
@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["real16", "prot32", "long64"])
def test_set_sregs_round_trip_equals_real_kvm(mode: str) -> None:
    """boot.py's KVM_SET_SREGS for each mode (unusable LDTR included), then one with arbitrary
    bases, limits and attribute bits: KVM_GET_SREGS gives the same fields on both backends.
    An unusable segment keeps only selector, base and limit on VMX (vmx_segment_access_rights:
    AR = unusable; vmx_get_segment: present = !unusable); kvm_pvm keeps its attributes too
    (a labelled host difference: the sim models kvm_intel)."""
    from kvmsim.realkvm.backend import vendor_module

    ms = [_machine("hlt", mode, b) for b in ("sim", "kvm")]
    try:
        assert _sregs_dict(ms[0].vcpu.get_sregs()) == _sregs_dict(ms[1].vcpu.get_sregs())
        for m in ms:
            s = m.vcpu.get_sregs()
            s.fs.base, s.fs.limit, s.fs.avl = 0x12345000, 0xABCDE, 1
            s.gs.base, s.gs.selector = 0x7000, 0x10
            s.es.unusable = 1
            m.vcpu.set_sregs(s)
        sim, kvm = (_sregs_dict(m.vcpu.get_sregs()) for m in ms)
        assert {**sim["es"], **_VMX_UNUSABLE_AR} == sim["es"]
        if vendor_module() == "kvm_pvm":
            assert kvm["es"]["unusable"] == 1 and kvm["es"]["type"] == 3   # attributes kept: not VMX's AR
            kvm["es"] = {**kvm["es"], **_VMX_UNUSABLE_AR}
        assert sim == kvm
    finally:
        for m in ms:
            m.close()


def _mode_sregs(base: KvmSregs, mode: str) -> KvmSregs:
    """`base` (boot.py's long64 state) changed into one of the six modes the emulator tells apart."""
    s = KvmSregs.from_buffer_copy(base)
    if mode == "real":
        boot._real16_sregs(s)
    elif mode in ("prot16", "prot32", "vm86"):
        s.cr0, s.cr4, s.efer = boot.CR0_PROT32, 0, 0
        s.cs = boot.flat_code32() if mode != "prot16" else boot.seg(0x08, 0, 0xFFFF, 0xB)
    elif mode == "compat":
        s.cs = boot.flat_code32()
    return s


@pytest.mark.parametrize("mode", ["real", "vm86", "prot16", "prot32", "compat", "long64"])
def test_mode_follows_cr0_eflags_efer_and_the_cs_cache(mode: str) -> None:
    """KVM_SET_SREGS/KVM_SET_REGS alone put the one CPU in each mode; hw.mode() (what the emulator's
    init_emulate_ctxt uses) follows CR0.PE, EFLAGS.VM, EFER.LMA and CS.L/CS.D of the cache."""
    m = _machine("hlt", "long64", "sim")
    try:
        m.vcpu.set_sregs(_mode_sregs(m.vcpu.get_sregs(), mode))
        regs = m.vcpu.get_regs()
        regs.rflags = 0x2 | (1 << 17 if mode == "vm86" else 0)
        m.vcpu.set_regs(regs)
        hw = m.vcpu.vcpu.hw
        assert hw.mode() == mode
        assert hw.get_sregs().cs.as_dict() == m.vcpu.get_sregs().cs.as_dict()
    finally:
        m.close()
