"""scenario/guest_build.py and guests/: every guest builds, errors quote the assembler, the
cache is exact, and the library/guests behave on a bare unicorn CPU (a smoke check only: the
real run path, with VM exits, is kvmsim's own)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvmsim.errors import GuestBuildError
from kvmsim.scenario import guest_build
from kvmsim.scenario.guest_build import GuestImage, binutils_available, build_guest
from kvmsim.vmm import boot

pytestmark = pytest.mark.skipif(not binutils_available(), reason="GNU binutils (as, ld) not installed")

REPO = Path(__file__).resolve().parents[1]
ALL = ("real16", "prot32", "long64")


@dataclass(frozen=True)
class GuestCase:
    name: str
    modes: tuple[str, ...] = ALL
    symbols: tuple[str, ...] = ()

    @property
    def descr(self) -> str:
        return self.name


GUESTS = [
    GuestCase("serial_hello", symbols=("hello",)),
    GuestCase("port_in", symbols=("in_b", "in_w", "in_l")),
    GuestCase("cpuid", ("long64",), ("cpuid_results",)),
    GuestCase("msr"),
    GuestCase("msr_userspace"),
    GuestCase("hypercall"),
    GuestCase("halt", symbols=("halt_insn",)),
    GuestCase("triple_fault", symbols=("fault_insn",)),
    GuestCase("unhandled_exit", symbols=("unhandled_insn",)),
    GuestCase("pio_loop", symbols=("pio_loop",)),
    GuestCase("native_loop", symbols=("native_loop",)),
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMSIM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kvmsim-cache"))


# ---------------------------------------------------------------- building

@pytest.mark.parametrize("case", GUESTS, ids=lambda c: c.descr)
def test_guest_builds_in_each_of_its_modes(case: GuestCase) -> None:
    for mode in case.modes:
        img = build_guest(REPO / "guests" / f"{case.name}.S", None, mode)
        assert img.load_addr == boot.DEFAULT_ORIGIN[mode]
        assert img.entry == img.load_addr == img.symbols["_start"]  # _start comes first
        assert img.image and img.mode == mode
        for sym in ("serial_putc", "kvmsim_report", "kvmsim_exc13", *case.symbols):
            assert img.load_addr <= img.symbols[sym] < img.end, (mode, sym)
        assert not any(n.startswith("KVMSIM_MODE") for n in img.symbols)  # absolute syms dropped


def test_cpuid_refuses_other_modes() -> None:
    with pytest.raises(GuestBuildError, match="cpuid.S is a long64 guest"):
        build_guest(REPO / "guests" / "cpuid.S", None, "prot32")


def test_assembler_error_quotes_file_line_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.S").write_text("_start:\n    nop\n    movl %eax, %xyz\n")
    with pytest.raises(GuestBuildError) as ei:
        build_guest("bad.S", None, "long64")
    err = ei.value
    assert "bad.S:3: Error: bad register name `%xyz'" in str(err)
    assert (err.path, err.line) == ("bad.S", 3)
    assert "kvmsim-guest-" not in str(err)  # no temp paths leak


def test_inline_asm_error_maps_to_yaml_line() -> None:
    asm = ".include \"kvmsim.inc\"\n_start:\n    frobnicate %eax\n"
    with pytest.raises(GuestBuildError) as ei:
        build_guest(None, asm, "prot32", display_name="scenarios/x.yaml", line_offset=10)
    assert "scenarios/x.yaml:13: Error: no such instruction: `frobnicate %eax'" in str(ei.value)
    assert ei.value.line == 13


def test_library_misuse_points_at_the_invocation() -> None:
    with pytest.raises(GuestBuildError) as ei:
        build_guest(None, ".include \"kvmsim.inc\"\n_start:\n SET_IVT_HANDLER 13, _start\n",
                    "long64", display_name="g.S")
    msg = str(ei.value)
    assert "SET_IVT_HANDLER is for real16" in msg and "g.S:3:  Info: macro invoked from here" in msg
    assert ei.value.line == 3  # the invocation, not the line inside the macro


def test_link_error_is_reported() -> None:
    with pytest.raises(GuestBuildError, match="link failed"):
        build_guest(None, "_start:\n  jmp nowhere\n", "long64", display_name="l.S")


def test_missing_source() -> None:
    with pytest.raises(GuestBuildError) as ei:
        build_guest("guests/no_such_guest.S", None, "long64")
    assert (ei.value.path, ei.value.line, ei.value.msg) == (
        "guests/no_such_guest.S", None, "guest source not found")


def test_missing_binutils_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    guest_build._tool_versions.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(GuestBuildError, match=r"'as' not found.*apt-get install binutils"):
            build_guest(None, "_start: nop\n", "long64", use_cache=False)
    finally:
        guest_build._tool_versions.cache_clear()


def test_cache_returns_identical_image_without_rebuilding(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("KVMSIM_CACHE_DIR", str(tmp_path))
    src = REPO / "guests" / "serial_hello.S"
    first = build_guest(src, None, "long64")
    assert len(list((tmp_path / "guests").glob("*.bin"))) == 1

    def no_build(*a: object, **k: object) -> GuestImage:
        raise AssertionError("cache miss")

    monkeypatch.setattr(guest_build, "_build", no_build)
    again = build_guest(src, None, "long64")
    assert again == first and again.image == first.image and again.symbols == first.symbols
    with pytest.raises(AssertionError, match="cache miss"):   # other mode, other key
        build_guest(src, None, "prot32")
    with pytest.raises(AssertionError, match="cache miss"):   # defines are part of the key
        build_guest(src, None, "long64", defines={"X": 1})


def test_cache_key_covers_included_files(tmp_path: Path) -> None:
    (tmp_path / "g.S").write_text('.include "mine.inc"\n_start: .byte VAL\n')
    (tmp_path / "mine.inc").write_text("VAL = 1\n")
    one = build_guest(tmp_path / "g.S", None, "long64")
    (tmp_path / "mine.inc").write_text("VAL = 2\n")
    two = build_guest(tmp_path / "g.S", None, "long64")
    assert one.image[0] == 1 and two.image[0] == 2


def test_origin_and_symbolize() -> None:
    img = build_guest(None, "_start:\n nop\nfoo:\n nop\n nop\n", "prot32", origin=0x200000)
    assert img.load_addr == img.entry == 0x200000
    assert img.symbolize(0x200000) == "_start"
    assert img.symbolize(0x200001) == "foo"
    assert img.symbolize(0x200002) == "foo+0x1"
    assert img.symbolize(0x1000) == "0x1000"
    assert img.symbolize(img.end + 0x100) == hex(img.end + 0x100)


# ---------------------------------------------------------------- bare-unicorn smoke runs

@dataclass
class FlatRun:
    exit_code: int | None = None
    serial: str = ""
    outs: list[tuple[int, int, int]] = field(default_factory=list)
    halts: int = 0
    vectors: list[int] = field(default_factory=list)
    regs: dict[str, int] = field(default_factory=dict)


def run_flat(img: GuestImage, port60: int = 0x12345678, rcx: int = 0,
             max_insns: int = 2_000_000) -> FlatRun:
    """Run a guest on unicorn with boot.py's GDT, a 16550 that is always ready, a port-0x60
    device and the debug-exit port.  Exceptions are delivered through the guest's IDT/IVT by
    hand (unicorn reports them instead of delivering them); no error codes (tests avoid them)."""
    uc_mod = pytest.importorskip("unicorn")
    from unicorn import x86_const as X

    mode = img.mode
    uc = uc_mod.Uc(uc_mod.UC_ARCH_X86, {"real16": uc_mod.UC_MODE_16, "prot32": uc_mod.UC_MODE_32,
                                        "long64": uc_mod.UC_MODE_64}[mode])
    wide = mode == "long64"
    RIP, RSP = (X.UC_X86_REG_RIP, X.UC_X86_REG_RSP) if wide else (X.UC_X86_REG_EIP, X.UC_X86_REG_ESP)
    uc.mem_map(0, 4 << 20)
    if mode != "real16":
        ram = bytearray(0x4000)
        boot.write_gdt(boot._Ram(memoryview(ram), 0, mode))
        uc.mem_write(0, bytes(ram))
        uc.reg_write(X.UC_X86_REG_GDTR, (0, boot.GDT_BASE, boot.GDT_LIMIT, 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, boot.IDT_BASE, boot.IDT_LIMIT[mode], 0))
        for reg in (X.UC_X86_REG_SS, X.UC_X86_REG_DS, X.UC_X86_REG_ES):
            uc.reg_write(reg, boot.KERNEL_DS)
        uc.reg_write(X.UC_X86_REG_CS, boot.KERNEL_CS64 if wide else boot.KERNEL_CS32)
    uc.mem_write(img.load_addr, img.image)
    uc.reg_write(RSP, boot.DEFAULT_STACK[mode])
    uc.reg_write(X.UC_X86_REG_RCX if wide else X.UC_X86_REG_ECX, rcx)
    run = FlatRun()

    def on_in(uc, port, size, _):  # noqa: ANN001
        return {0x3FD: 0x20, 0x60: port60 & ((1 << (8 * size)) - 1)}.get(port, 0)

    def on_out(uc, port, size, value, _):  # noqa: ANN001
        run.outs.append((port, size, value))
        if port == 0x3F8:
            run.serial += chr(value & 0xFF)
        elif port == 0xF4:
            run.exit_code = value
            uc.emu_stop()

    def on_intr(uc, vector, _):  # noqa: ANN001
        run.vectors.append(vector)
        rip, sp = uc.reg_read(RIP), uc.reg_read(RSP)
        cs, fl = uc.reg_read(X.UC_X86_REG_CS), uc.reg_read(X.UC_X86_REG_EFLAGS)
        if mode == "real16":
            target = struct.unpack("<H", uc.mem_read(vector * 4, 2))[0]
            frame = struct.pack("<HHH", rip, cs, fl)
        elif mode == "prot32":
            lo, hi = struct.unpack("<II", uc.mem_read(boot.IDT_BASE + vector * 8, 8))
            target, frame = (lo & 0xFFFF) | (hi & 0xFFFF0000), struct.pack("<III", rip, cs, fl)
        else:
            lo, hi = struct.unpack("<II", uc.mem_read(boot.IDT_BASE + vector * 16, 8))
            ss = uc.reg_read(X.UC_X86_REG_SS)
            target, frame = (lo & 0xFFFF) | (hi & 0xFFFF0000), struct.pack("<5Q", rip, cs, fl, sp, ss)
            sp &= ~15
        uc.mem_write(sp - len(frame), frame)
        uc.reg_write(RSP, sp - len(frame))
        uc.reg_write(RIP, target)

    uc.hook_add(uc_mod.UC_HOOK_INSN, on_in, None, 1, 0, X.UC_X86_INS_IN)
    uc.hook_add(uc_mod.UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
    uc.hook_add(uc_mod.UC_HOOK_INTR, on_intr)
    pc = img.entry
    while run.exit_code is None and run.halts < 10:
        uc.emu_start(pc, 1 << 40, count=max_insns)
        pc = uc.reg_read(RIP)
        if run.exit_code is None and uc.mem_read(pc - 1, 1) == b"\xf4":
            run.halts += 1   # HLT stopped unicorn; resume after it like KVM_EXIT_HLT + KVM_RUN
        elif run.exit_code is None:
            break
    names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")
    regs = [getattr(X, f"UC_X86_REG_{(n if wide else 'e' + n[1:]).upper()}") for n in names]
    run.regs = {n: uc.reg_read(r) for n, r in zip(names, regs)}
    return run


def guest(name: str, mode: str, **defines: int) -> GuestImage:
    return build_guest(REPO / "guests" / f"{name}.S", None, mode, defines=defines)


@pytest.mark.parametrize("mode", ALL)
def test_serial_hello_runs(mode: str) -> None:
    run = run_flat(guest("serial_hello", mode))
    assert (run.exit_code, run.serial) == (0, f"Hello from {mode}\n")
    # Every byte is an LSR poll answered "ready" then one THR write.
    assert [o for o in run.outs if o[0] == 0x3F8] == [(0x3F8, 1, ord(c)) for c in run.serial]


@pytest.mark.parametrize("mode", ALL)
def test_port_in_merges_and_zero_extends(mode: str) -> None:
    run = run_flat(guest("port_in", mode))
    assert run.exit_code == 0, run.serial
    assert run.serial.endswith("SUMMARY: 3 tests, 0 failures\n") and "FAIL" not in run.serial
    mask = (1 << 64) - 1 if mode == "long64" else 0xFFFFFFFF
    pattern = 0xAAAAAAAAAAAAAAAA & mask
    assert run.regs["rbx"] == pattern & ~0xFF | 0x78
    assert run.regs["rsi"] == pattern & ~0xFFFF | 0x5678
    assert run.regs["rdi"] == 0x12345678


def test_port_in_reports_a_wrong_device_value() -> None:
    run = run_flat(guest("port_in", "long64"), port60=0x87654321)
    assert run.exit_code == 1 and run.serial.count("FAIL: ") == 3


@pytest.mark.parametrize("mode", ALL)
def test_library_exception_table_catches_faults_and_traps(mode: str) -> None:
    asm = """
        .include "kvmsim.inc"
    _start:
        INSTALL_EXCEPTION_HANDLERS
        xorl    %ecx, %ecx
        EXPECT_FAULT DE_VECTOR, divl %ecx
        REPORT  e, "div by zero raises #DE"
        EXPECT_FAULT BP_VECTOR, int3
        REPORT  e, "int3 (a trap) is caught too"
        EXPECT_NO_FAULT nop
        REPORT  e, "nop does not fault"
        REPORT  ne, "a deliberate failure"
        REPORT_SUMMARY
    """
    run = run_flat(build_guest(None, asm, mode))
    assert run.vectors == [0, 3]
    assert run.serial == ("PASS: div by zero raises #DE\nPASS: int3 (a trap) is caught too\n"
                          "PASS: nop does not fault\nFAIL: a deliberate failure\n"
                          "SUMMARY: 4 tests, 1 failures\n")
    assert run.exit_code == 1


@pytest.mark.parametrize("mode", ALL)
def test_unhandled_exception_exits_0x100_plus_vector(mode: str) -> None:
    asm = '.include "kvmsim.inc"\n_start:\n INSTALL_EXCEPTION_HANDLERS\nboom: int3\n EXIT 0\n'
    img = build_guest(None, asm, mode)
    run = run_flat(img)
    assert run.exit_code == 0x103
    assert run.serial.startswith("Unhandled exception 3 at 0x")
    assert int(run.serial.split(" at ")[1].split()[0], 16) == img.symbols["boom"] + 1


@pytest.mark.parametrize("mode", ALL)
def test_halt_resumes_after_hlt(mode: str) -> None:
    run = run_flat(guest("halt", mode))
    assert (run.exit_code, run.serial, run.halts) == (0, "halting\nresumed\n", 1)


@pytest.mark.parametrize("mode", ALL)
def test_pio_loop_count_from_rcx_or_define(mode: str) -> None:
    run = run_flat(guest("pio_loop", mode), rcx=5)
    assert [o for o in run.outs if o[0] == 0x80] == [(0x80, 1, n) for n in (5, 4, 3, 2, 1)]
    run = run_flat(guest("pio_loop", mode, PIO_LOOP_COUNT=3))
    assert [o[2] for o in run.outs if o[0] == 0x80] == [3, 2, 1] and run.exit_code == 0


def native_checksum(n: int) -> int:
    x = 0
    for i in range(1, n + 1):
        x ^= (3 * i) & 0xFFFFFFFF
    return x


@pytest.mark.parametrize("mode", ALL)
def test_native_loop_checksum(mode: str) -> None:
    run = run_flat(guest("native_loop", mode), rcx=1000)
    assert run.exit_code == 0 and run.outs == [(0xF4, 4, 0)]
    assert (run.regs["rbx"], run.regs["rsi"], run.regs["rcx"]) == (native_checksum(1000), 3000, 0)


def test_unreadable_or_endless_source_is_a_build_error(tmp_path) -> None:
    """/proc/self/mem passes is_file() and answers EIO; a source above the bound is refused unread."""
    from kvmsim.errors import GuestBuildError
    from kvmsim.scenario import guest_build as gb

    with pytest.raises(GuestBuildError, match="cannot read guest source.*Input/output error"):
        gb.build_guest(Path("/proc/self/mem"), None, "long64", use_cache=False)
    big = tmp_path / "big.S"
    big.write_bytes(b"# " + b"x" * gb.MAX_SOURCE_BYTES + b"\n")
    with pytest.raises(GuestBuildError, match="larger than 4 MiB"):
        gb.build_guest(big, None, "long64", use_cache=False)
    inc = tmp_path / "inc.S"
    inc.write_text('.include "/proc/self/mem"\nhlt\n')
    with pytest.raises(GuestBuildError, match="cannot read guest source '/proc/[0-9]+/mem'"):
        gb.build_guest(inc, None, "long64", use_cache=True)


def test_hostile_assembler_input_is_bounded(tmp_path) -> None:
    """Sources that make `as` write or allocate without end fail within the tool bounds, not the disk."""
    from kvmsim.errors import GuestBuildError
    from kvmsim.scenario import guest_build as gb

    for body, why in [(".skip 0x7fffffffff", "output exceeded 64 MiB"), (".fill 0x10000000, 1, 0", "output exceeded"),
                      ('.include "/dev/zero"', "")]:
        with pytest.raises(GuestBuildError, match=f"assembly failed(.|\\n)*{why}"):
            gb.build_guest(None, f".globl _start\n_start:\n{body}\n", "long64", use_cache=False)
