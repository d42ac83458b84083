"""Multiboot boot (vmm/multiboot.py, scenario guest.multiboot): the kernel file's checks, the
loader's placement and info block, the handoff state on both backends, bad input as file:line
errors from `check` and `run` alike, and kvm-unit-tests' own images reaching their first output."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from backends import BACKENDS
from badinput import assert_bad_input
from kvmsim.cli import main
from kvmsim.errors import ScenarioError
from kvmsim.kut import build
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import make_machine, run_scenario
from kvmsim.vmm import multiboot as mb

ROOT = Path(__file__).resolve().parents[1]
PROBE_DIR = ROOT / "guests" / "multiboot"
PROBE = PROBE_DIR / "probe.elf"
PROBE_ENV = PROBE_DIR / "probe-env"
PROBE_ENTRY = 0x400080          # `start` in probe.elf (readelf -h)


def _aout_kernel(code: bytes, bss: int = 0x2000, load: int = 0x200000) -> bytes:
    """A raw multiboot kernel loaded by its header's AOUT_KLUDGE addresses: the header at file
    offset 0 (= load), the code right after it, `bss` zero bytes beyond the file."""
    flags = mb.MULTIBOOT_AOUT_KLUDGE | mb.MULTIBOOT_MEMORY_INFO
    entry = load + 32
    hdr = struct.pack("<III5I", mb.MULTIBOOT_HEADER_MAGIC, flags, -(mb.MULTIBOOT_HEADER_MAGIC + flags) & 0xFFFFFFFF,
                      load, load, 0, load + 32 + len(code) + bss, entry)
    return hdr + code


def _scenario(tmp_path: Path, guest: str, extra: str = "") -> Path:
    f = tmp_path / "mb.yaml"
    f.write_text(f"name: mb\ndescription: multiboot\nguest: {guest}\n{extra}")
    return f


# ---------------------------------------------------------------- the kernel file

def test_probe_elf_segments_entry_and_symbols() -> None:
    k = mb.parse_kernel(PROBE.read_bytes())
    assert k.elf and k.entry == PROBE_ENTRY == k.symbols["start"]
    assert [s.paddr for s in k.segments] == [0x400074, 0x401000]
    text, data = k.segments
    assert len(text.data) == text.memsz                    # code: no bss
    assert data.memsz - len(data.data) >= 0x10000 - 0x1000  # the bss (stack included) is memory only
    assert k.symbols["bss_start"] >= data.paddr + len(data.data)
    assert k.header_offset == 0x74 and k.header_flags == mb.MULTIBOOT_MEMORY_INFO


@pytest.mark.skipif(shutil.which("as") is None or shutil.which("ld") is None, reason="binutils not installed")
def test_committed_probe_elf_is_built_from_its_source(tmp_path: Path) -> None:
    """probe.elf is the output of the command in probe.S's header (same loadable bytes, same entry)."""
    defs = [a for n, v in (("KVMSIM_MODE", 32), ("KVMSIM_MODE_REAL16", 0), ("KVMSIM_MODE_PROT32", 1),
                           ("KVMSIM_MODE_LONG64", 0), ("KVMSIM_MODE_RESET", 0)) for a in ("--defsym", f"{n}={v}")]
    subprocess.run(["as", "--32", "-I", str(ROOT / "guests" / "lib"), *defs, "-o", str(tmp_path / "p.o"),
                    str(PROBE_DIR / "probe.S")], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(PROBE_DIR / "probe.ld"), "-o", str(tmp_path / "p.elf"),
                    str(tmp_path / "p.o")], check=True)
    fresh, committed = (mb.parse_kernel(p.read_bytes()) for p in (tmp_path / "p.elf", PROBE))
    assert fresh.entry == committed.entry and fresh.segments == committed.segments


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="binutils not installed")
def test_elf64_container_loads_the_same(tmp_path: Path) -> None:
    """The probe in an ELF64 file (objcopy): same segments, entry and symbols, and the same run."""
    subprocess.run(["objcopy", "-O", "elf64-x86-64", str(PROBE), str(tmp_path / "p64.elf")], check=True)
    k32, k64 = (mb.parse_kernel(p.read_bytes()) for p in (PROBE, tmp_path / "p64.elf"))
    assert k64.header_offset != k32.header_offset          # the header moved in the file, the image did not
    assert (k64.entry, k64.segments, k64.symbols) == (k32.entry, k32.segments, k32.symbols)
    runs = [run_scenario(load_scenario(_scenario(tmp_path, f"{{multiboot: {k}, modules: [{PROBE_ENV}]}}")))
            for k in (PROBE, tmp_path / "p64.elf")]
    assert runs[0].stop.code == runs[1].stop.code == 0
    assert runs[0].serial.replace(str(PROBE), "K") == runs[1].serial.replace(str(tmp_path / "p64.elf"), "K")
    assert "SUMMARY: 7 tests, 0 failures" in runs[1].serial


def test_header_must_lie_in_the_first_8k_with_a_valid_checksum() -> None:
    hdr = struct.pack("<III", mb.MULTIBOOT_HEADER_MAGIC, 0, -mb.MULTIBOOT_HEADER_MAGIC & 0xFFFFFFFF)
    assert mb.find_header(bytes(8180) + hdr) == (8180, 0)        # ends at byte 8192: inside
    for bad in (bytes(8184) + hdr,                                 # runs past 8 KiB
                bytes(8) + hdr[:8] + b"\1\0\0\0",                  # checksum wrong
                bytes(6) + hdr):                                   # not 4-byte aligned
        with pytest.raises(mb.MultibootError, match="no multiboot header"):
            mb.find_header(bad)


@pytest.mark.parametrize("patch, message", [
    (lambda d: d[:0x74] + bytes(12) + d[0x80:], "no multiboot header"),
    (lambda d: b"\x7fELG" + d[4:], "not an ELF file"),
    (lambda d: d[:16] + struct.pack("<H", 3) + d[18:], "not an executable"),
    (lambda d: d[:18] + struct.pack("<H", 40) + d[20:], "not x86"),
    (lambda d: d[:0x78] + struct.pack("<II", 0x10002, -(mb.MULTIBOOT_HEADER_MAGIC + 0x10002) & 0xFFFFFFFF)
     + d[0x80:], "put the load start before"),    # AOUT_KLUDGE: the code after the header read as addresses
    (lambda d: _aout_kernel(b"")[:24], "address fields run past the end"),
    (lambda d: _aout_kernel(b"\xf4")[:12] + struct.pack("<5I", 0x200000, 0x200000, 0x200100, 0, 0), "past the end"),
    (lambda d: d[:0x78] + struct.pack("<II", 0x8, -(mb.MULTIBOOT_HEADER_MAGIC + 0x8) & 0xFFFFFFFF) + d[0x80:],
     "requires features 0x8"),
])
def test_bad_kernels_are_refused_with_the_reason(patch, message: str) -> None:
    data = PROBE.read_bytes()
    with pytest.raises(mb.MultibootError, match=message):
        mb.parse_kernel(patch(data))


def test_aout_kludge_kernel_uses_the_header_addresses() -> None:
    k = mb.parse_kernel(_aout_kernel(b"\xf4", bss=0x1800))
    assert not k.elf and k.entry == 0x200020
    (seg,) = k.segments
    assert (seg.paddr, len(seg.data), seg.memsz) == (0x200000, 33, 33 + 0x1800)


# ---------------------------------------------------------------- placement and the info block

def test_memory_map_and_mem_fields_follow_the_memslots() -> None:
    two = [mb.RamRange(0, 1 << 20), mb.RamRange(1 << 20, 63 << 20), mb.RamRange(0xFFFC0000, 0x40000, False)]
    assert mb.mem_lower_upper(two) == (640, 63 * 1024)             # adjacent slots are one run
    assert mb.memory_map(two) == ((0, 0xA0000, 1), (0xA0000, 0x60000, 2), (0x100000, 63 << 20, 1),
                                  (0xFFFC0000, 0x40000, 2))
    high_only = [mb.RamRange(0x100000, 16 << 20)]
    assert mb.mem_lower_upper(high_only) == (0, 16 * 1024)
    gap = [mb.RamRange(0, 2 << 20), mb.RamRange(4 << 20, 4 << 20)]   # mem_upper stops at the first hole
    assert mb.mem_lower_upper(gap) == (640, 1024)


def test_load_fills_dirty_ram_and_writes_the_info_block() -> None:
    """Into RAM full of 0xff, QEMU's layout: segments, zeroed bss, the buffer (module list, then the
    strings) on the first page after the image, the module on the page after the buffer, the memory
    map at 0x9000 and the info block at 0x9500 pointing at them."""
    kernel = mb.parse_kernel(PROBE.read_bytes())
    ram_size = 32 << 20
    buf = bytearray(b"\xff" * ram_size)
    ranges = [mb.RamRange(0, ram_size)]
    cmdline, modules = b"probe.elf -v", [(b"env", b"A=1\n")]
    plan = mb.plan_boot(kernel, [4], ranges, len(cmdline) + 1 + 4)
    mb.load([(0, memoryview(buf))], kernel, plan, cmdline, modules)
    for s in kernel.segments:
        assert buf[s.paddr:s.paddr + len(s.data)] == s.data
        assert not any(buf[s.paddr + len(s.data):s.end])
    buffer_addr = (kernel.end + 0xFFF) & ~0xFFF
    (start, end), = plan.modules
    assert plan.buffer_addr == buffer_addr and start == buffer_addr + 0x1000 and buf[start:end] == b"A=1\n"

    def u32(addr: int) -> int:
        return struct.unpack_from("<I", buf, addr)[0]

    def cstr(addr: int) -> bytes:
        return bytes(buf[addr:buf.index(0, addr)])

    info = plan.info_addr
    assert info == 0x9500
    assert u32(info) == mb.INFO_FLAGS and u32(info + 4) == 640 and u32(info + 8) == 31 * 1024
    assert cstr(u32(info + 16)) == cmdline and cstr(u32(info + 64)) == b"kvmsim"
    assert u32(info + 20) == 1
    mod = u32(info + 24)
    assert mod == buffer_addr and (u32(mod), u32(mod + 4), cstr(u32(mod + 8))) == (start, end, b"env")
    assert u32(mod + 8) == buffer_addr + 16                      # strings after the list: module's first
    assert u32(info + 16) == u32(mod + 8) + 4 and u32(info + 64) == u32(info + 16) + len(cmdline) + 1
    assert u32(info + 48) == 0x9000 and u32(info + 44) == 3 * 24
    entries, addr = [], u32(info + 48)
    while addr < u32(info + 48) + u32(info + 44):
        size, base, length, typ = struct.unpack_from("<IQQI", buf, addr)
        entries.append((base, length, typ))
        addr += size + 4
    assert entries == [(0, 0xA0000, 1), (0xA0000, 0x60000, 2), (0x100000, ram_size - 0x100000, 1)]


def test_modules_follow_the_buffer_and_fit_or_are_refused() -> None:
    kernel = mb.parse_kernel(PROBE.read_bytes())       # ends at 0x412000: the buffer is 0x412000-0x412fff
    ranges = [mb.RamRange(0, 0x800000)]
    plan = mb.plan_boot(kernel, [0x3000, 1, 0], ranges, 16)
    assert plan.buffer_addr == 0x412000
    assert [s for s, _ in plan.modules] == [0x413000, 0x416000, 0x417000]
    with pytest.raises(mb.MultibootError, match="module 1") as e:
        mb.plan_boot(kernel, [0x3000, 0x800000], ranges, 16)
    assert (e.value.field, e.value.index) == ("modules", 1)


# ---------------------------------------------------------------- the handoff, on both backends

@pytest.mark.parametrize("backend", BACKENDS)
def test_handoff_state(backend: str, tmp_path: Path) -> None:
    """Before the first KVM_RUN: EAX magic, EBX the info block, EIP the ELF entry, EFLAGS 0x2,
    32-bit flat segments, CR0.PE without paging."""
    sc = load_scenario(_scenario(tmp_path, f"{{multiboot: {PROBE}, modules: [{PROBE_ENV}]}}"))
    with make_machine(sc, backend) as m:
        regs, sregs = m.vcpu.get_regs(), m.vcpu.get_sregs()
    assert (regs.rax, regs.rbx, regs.rip, regs.rflags) == (0x2BADB002, 0x9500, PROBE_ENTRY, 0x2)
    assert sregs.cr0 & 0x80000001 == 1 and sregs.efer & 0x500 == 0
    for seg in (sregs.cs, sregs.ds, sregs.es, sregs.ss):
        assert (seg.base, seg.limit, seg.db, seg.present) == (0, 0xFFFFFFFF, 1, 1)
    assert sregs.cs.type & 0x8 and not sregs.ds.type & 0x8


@pytest.mark.parametrize("backend", BACKENDS)
def test_aout_kludge_kernel_runs_to_its_hlt(backend: str, tmp_path: Path) -> None:
    """A raw kernel (hlt at its entry) halts there with the handoff registers, its bss zeroed."""
    (tmp_path / "raw.bin").write_bytes(_aout_kernel(b"\xf4", bss=0x1800))
    sc = load_scenario(_scenario(tmp_path, "{multiboot: raw.bin, cmdline: x}",
                                 "memory: [{gpa: 0, size: 4M}]\nexpect:\n  stop: {reason: hlt}\n"
                                 "  regs: {rax: 0x2badb002, rbx: 0x9500, rip: 0x200021}\n"
                                 "  memory:\n    - {gpa: 0x200021, bytes: '00000000000000000000000000000000'}\n"))
    res = run_scenario(sc, backend)
    assert res.stop.reason == "hlt" and res.regs["rax"] == 0x2BADB002 and res.regs["rbx"] == 0x9500
    assert res.memory == [{"gpa": 0x200021, "bytes": "00" * 16}]


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_over_the_info_block_loads_like_realmode_flat(backend: str, tmp_path: Path) -> None:
    """An image at 0x8000-0xafff (realmode.flat's 0x8000-0xda30 covers 0x9000 too): accepted, as
    QEMU boots it; EBX is still 0x9500, where the image's own bytes win (QEMU's ROM copies the image
    over the block), and the buffer and the module follow the image at 0xb000 and 0xc000."""
    code = bytes.fromhex("8b0d00b00000" "8b1508b00000" "f4")        # mov ecx,[0xb000]; mov edx,[0xb008]; hlt
    body = code + b"\xab" * (0x9600 - 0x8020 - len(code))            # file bytes up to 0x9600, bss to 0xb000
    (tmp_path / "low.bin").write_bytes(_aout_kernel(body, bss=0x1A00, load=0x8000))
    (tmp_path / "env").write_text("NR_CPUS=1\n")
    want = {0x94F8: b"\xab" * 16,                                   # the image, not the info block
            0xAFF8: bytes(8),                                       # its bss, zeroed
            0xB000: struct.pack("<IIII", 0xC000, 0xC00A, 0xB010, 0) + b"env\0low.bin x\0kvmsim\0",
            0xC000: b"NR_CPUS=1\n"}
    checks = "".join(f"    - {{gpa: {g:#x}, bytes: '{v.hex()}'}}\n" for g, v in want.items())
    sc = load_scenario(_scenario(tmp_path, "{multiboot: low.bin, cmdline: x, modules: [env]}",
                                 "memory: [{gpa: 0, size: 1M}]\nexpect:\n  stop: {reason: hlt}\n"
                                 "  regs: {rax: 0x2badb002, rbx: 0x9500, rcx: 0xc000, rdx: 0xb010}\n"
                                 f"  memory:\n{checks}"))
    res = run_scenario(sc, backend)
    assert res.stop.reason == "hlt" and (res.regs["rax"], res.regs["rbx"]) == (0x2BADB002, 0x9500)
    assert (res.regs["rcx"], res.regs["rdx"]) == (0xC000, 0xB010)
    assert {m["gpa"]: bytes.fromhex(m["bytes"]) for m in res.memory} == want


# ---------------------------------------------------------------- bad input: check == run, file:line

BAD = {
    "missing-kernel": ("{multiboot: nothere.elf}", "", 3, "multiboot kernel 'nothere.elf' not found"),
    "not-elf": ("{multiboot: notelf.bin}", "", 3, "not an ELF file"),
    "no-header": ("{multiboot: noheader.elf}", "", 3, "no multiboot header"),
    "outside-memory": ("\n  multiboot: PROBE\n", "memory: [{gpa: 0, size: 2M}]\n", 4,
                       "image segment 0x400074-0x4005b1 is not inside one writable memslot"),
    "modules-do-not-fit": ("\n  multiboot: PROBE\n  modules: [big.bin]\n", "memory: [{gpa: 0, size: 0x413000}]\n",
                           5, "module 0 (0x2000 bytes) does not fit"),
    "buffer-does-not-fit": ("\n  multiboot: PROBE\n  cmdline: x\n", "memory: [{gpa: 0, size: 0x412000}]\n",
                            5, "the module list and the strings (command line, module names) does not fit"),
    "no-info-ram": ("{multiboot: PROBE}", "memory: [{gpa: 0, size: 0x8000}, {gpa: 0x400000, size: 16M}]\n", 4,
                    "need writable RAM at 0x9000-0x957f"),
    "missing-module": ("\n  multiboot: PROBE\n  modules: [ENV, gone.txt]\n", "", 5, "module 'gone.txt' not found"),
    "mode-long64": ("{multiboot: PROBE, mode: long64}", "", 3, "leave mode out or write prot32"),
    "entry-with-multiboot": ("{multiboot: PROBE, entry: 0x400000}", "", 3, "entry is for assembled guests"),
    "cmdline-without-multiboot": ("{asm: hlt, mode: prot32, cmdline: x}", "", 3, "cmdline goes with a multiboot"),
    "two-sources": ("{asm: hlt, multiboot: PROBE}", "", 3, "exactly one of 'source'"),
    "no-tables-ram": ("{multiboot: PROBE}", "memory: [{gpa: 0x400000, size: 16M}]\n", 4,
                      "needs writable RAM at 0x2000-0x3fff"),
}


def _bad_file(tmp_path: Path, case: str) -> Path:
    guest, extra, _, _ = BAD[case]
    (tmp_path / "notelf.bin").write_bytes(b"\0" * 16 + struct.pack("<III", mb.MULTIBOOT_HEADER_MAGIC, 0,
                                                                   -mb.MULTIBOOT_HEADER_MAGIC & 0xFFFFFFFF))
    data = PROBE.read_bytes()
    (tmp_path / "noheader.elf").write_bytes(data[:0x74] + bytes(12) + data[0x80:])
    (tmp_path / "big.bin").write_bytes(bytes(0x2000))
    return _scenario(tmp_path, guest.replace("PROBE", str(PROBE)).replace("ENV", str(PROBE_ENV)), extra)


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_multiboot_input_is_a_file_line_error(case: str, command: str, tmp_path: Path, capsys) -> None:
    _, _, line, fragment = BAD[case]
    assert_bad_input(command, _bad_file(tmp_path, case), None, line, fragment, capsys)


def test_check_and_run_say_the_same(tmp_path: Path, capsys) -> None:
    for case in sorted(BAD):
        f = _bad_file(tmp_path, case)
        main(["check", str(f)])
        from_check = capsys.readouterr().err
        main(["run", str(f)])
        assert capsys.readouterr().err == from_check, case


def test_module_that_grew_after_loading_is_placed_again_at_run(tmp_path: Path) -> None:
    """The scenario checked a 1-page module; by the run it no longer fits: a file:line error at it."""
    (tmp_path / "m.bin").write_bytes(b"x")
    f = _scenario(tmp_path, f"\n  multiboot: {PROBE}\n  modules:\n    - m.bin\n", "memory: [{gpa: 0, size: 0x414000}]\n")
    sc = load_scenario(f)
    (tmp_path / "m.bin").write_bytes(bytes(0x2000))
    with pytest.raises(ScenarioError) as e:
        run_scenario(sc)
    assert (e.value.path, e.value.line) == (str(f), 6)
    assert e.value.msg.startswith("field guest.modules[0]: module 0 (0x2000 bytes) does not fit")


# ---------------------------------------------------------------- kvm-unit-tests images

def _kut_x86() -> Path:
    """x86/ of the kvm-unit-tests build `kvmsim kut` uses (built once into the cache), else skip."""
    try:
        return build.build_from_archive("x86_64").root / "x86"
    except ScenarioError as e:
        pytest.skip(f"no kvm-unit-tests build: {e.msg.splitlines()[0]}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_kvm_unit_tests_image_reaches_its_first_output(backend: str, tmp_path: Path) -> None:
    """vmexit.flat from its own 32-bit entry: long mode, its IDT and TSS, the xAPIC set-up, then
    the first serial line."""
    KUT = _kut_x86()
    (tmp_path / "env").write_text("NR_CPUS=1\n")
    sc = load_scenario(_scenario(tmp_path, f"{{multiboot: {KUT / 'vmexit.flat'}, cmdline: cpuid, modules: [env]}}",
                                 "limits: {max_exits: 300}\n"))
    res = run_scenario(sc, backend)
    assert res.serial.startswith("enabling apic\r\n")
    assert res.sregs["efer"] & 0x500 == 0x500           # it entered long mode itself
