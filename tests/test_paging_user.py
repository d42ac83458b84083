"""paging.user: the boot page tables give U/S=1 to exactly the listed 2 MiB pages (and the PDPT and
PML4 entries above them); without it CPL3 code cannot run; bad ranges are status-2 file:line errors."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario
from kvmsim.vmm import boot
from badinput import assert_bad_input

ROOT = Path(__file__).resolve().parents[1]
HEAD = "name: t\ndescription: paging\nguest: {asm: hlt, mode: long64}\n"

CASES = {
    "addr-not-2m": ("paging:\n  user:\n    - {addr: 0x1000, size: 2M}\n", 6, "addr 0x1000 is not a multiple of 2 MiB"),
    "size-not-2m": ("paging:\n  user:\n    - {addr: 0, size: 4K}\n", 6, "size 0x1000 is not a multiple of 2 MiB"),
    "past-4g": ("paging:\n  user:\n    - {addr: 0xffe00000, size: 4M}\n", 6, "runs past 4 GiB"),
    "overlap": ("paging:\n  user:\n    - {addr: 0, size: 4M}\n    - {addr: 2M, size: 2M}\n", 7,
                "overlaps user[0]"),
    "unknown-key": ("paging:\n  user:\n    - {start: 0, size: 2M}\n", 6, "start"),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_user_range_is_status_2_with_file_line(case: str, command: str, tmp_path: Path, capsys) -> None:
    body, line, fragment = CASES[case]
    assert_bad_input(command, tmp_path / f"{case}.yaml", HEAD + body, line, fragment, capsys)


def test_user_ranges_need_the_long64_page_tables(tmp_path: Path, capsys) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("name: t\ndescription: d\nguest: {asm: hlt, mode: prot32}\npaging:\n  user:\n"
                 "    - {addr: 0, size: 2M}\n")
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{f}:5: error: ") and "needs guest.mode long64" in err


def test_write_page_tables_sets_us_on_exactly_the_ranges() -> None:
    mem = bytearray(0xA000)
    boot.write_page_tables(boot._Ram(memoryview(mem), 0, "long64"), [(0, 2 << 20), (0x40400000, 4 << 20)])
    pml4 = struct.unpack_from("<Q", mem, boot.PML4_BASE)[0]
    pdpt = struct.unpack_from("<4Q", mem, boot.PDPT_BASE)
    pds = [struct.unpack_from("<512Q", mem, boot.PD_BASE + i * 0x1000) for i in range(4)]
    u = boot.PTE_USER
    assert pml4 & u
    assert [bool(e & u) for e in pdpt] == [True, True, False, False]
    user_pages = [(i, j) for i in range(4) for j in range(512) if pds[i][j] & u]
    assert user_pages == [(0, 0), (1, 2), (1, 3)]
    # everything else as before: present, writable, large, identity
    assert all(pds[i][j] & ~u == (i * 512 + j) << 21 | 0x83 for i in range(4) for j in range(512))
    boot.write_page_tables(boot._Ram(memoryview(mem), 0, "long64"))
    assert not any(struct.unpack_from("<Q", mem, boot.PD_BASE + k * 8)[0] & u for k in range(2048))
    assert not struct.unpack_from("<Q", mem, boot.PML4_BASE)[0] & u


def test_without_user_pages_cpl3_code_faults(tmp_path: Path) -> None:
    """The same guest without paging.user: the IRETQ to CPL3 lands on a supervisor page, #PF on the
    fetch (error code 5: P|U; no I/D bit without EFER.NXE), delivered through the IDT on a
    supervisor page (an implicit supervisor read, hw/event.py), which the guest's handler reports
    as unhandled (EXIT 0x10e).  Same result on /dev/kvm (kvmsim diff: MATCH)."""
    src = (ROOT / "scenarios" / "cpl3-user-pages-long64.yaml").read_text()
    text = src.split("paging:")[0] + "expect:\n  stop: {reason: debug-exit, code: 0x10e}\n"
    f = tmp_path / "no-user.yaml"
    f.write_text(text.replace("guests/cpl3_user_pages.S", str(ROOT / "guests" / "cpl3_user_pages.S")))
    res = run_scenario(load_scenario(f))
    assert (res.stop.reason, res.stop.code) == ("debug-exit", 0x10E)
    assert res.serial.startswith("Unhandled exception 14 at 0x0010") and res.serial.endswith(" error 0x00000005\n")
