"""uapi.py, vmcs.py and EMULTYPE numbers are the kernel's: offsets from reference §10.2, numbers
parsed at test time from reference §1.2 / §6.1 / §10.1 (so the check is against the document)."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from kvmsim.hw.vmcs import ExitReason
from kvmsim.kvm.emulate.codes import EmulType
from kvmsim.uapi import KvmExit, KvmInternalError, KvmRun

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "kvm-exit-handling.md"


def _section(heading: str) -> str:
    """The text of one `### heading` section of the reference (skips when the file is absent)."""
    if not REFERENCE.is_file():
        pytest.skip(f"reference fact sheet not found at {REFERENCE}")
    text = REFERENCE.read_text()
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start:end if end != -1 else len(text)]


def _table_rows(section: str) -> list[list[str]]:
    """Cells of every markdown table row, header and separator rows dropped."""
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:] if rows else rows


# ---------------------------------------------------------------- struct kvm_run layout (§10.2)

_UNION = dict(KvmRun._fields_)["u"]


def _field(path: str) -> tuple[int, type]:
    """(byte offset inside struct kvm_run, ctypes type) of a dotted field; the exit union is anonymous."""
    cls, off = KvmRun, 0
    for name in path.split("."):
        if cls is KvmRun and name in dict(_UNION._fields_):
            cls, off = _UNION, off + KvmRun.u.offset
        off += getattr(cls, name).offset
        cls = dict(cls._fields_)[name]
    return off, cls


# (field, offset, size in bytes) — reference §10.2
KVM_RUN_LAYOUT = [
    ("request_interrupt_window", 0, 1),
    ("immediate_exit", 1, 1),
    ("exit_reason", 8, 4),
    ("ready_for_interrupt_injection", 12, 1),
    ("if_flag", 13, 1),
    ("flags", 14, 2),
    ("cr8", 16, 8),
    ("apic_base", 24, 8),
    ("hw.hardware_exit_reason", 32, 8),
    ("fail_entry.hardware_entry_failure_reason", 32, 8),
    ("fail_entry.cpu", 40, 4),
    ("ex.exception", 32, 4),
    ("ex.error_code", 36, 4),
    ("io.direction", 32, 1),
    ("io.size", 33, 1),
    ("io.port", 34, 2),
    ("io.count", 36, 4),
    ("io.data_offset", 40, 8),
    ("debug.arch.exception", 32, 4),
    ("debug.arch.pc", 40, 8),
    ("debug.arch.dr6", 48, 8),
    ("debug.arch.dr7", 56, 8),
    ("mmio.phys_addr", 32, 8),
    ("mmio.data", 40, 8),
    ("mmio.len", 48, 4),
    ("mmio.is_write", 52, 1),
    ("hypercall.nr", 32, 8),
    ("hypercall.args", 40, 48),
    ("hypercall.ret", 88, 8),
    ("hypercall.flags", 96, 8),
    ("internal.suberror", 32, 4),
    ("internal.ndata", 36, 4),
    ("internal.data", 40, 128),
    ("emulation_failure.suberror", 32, 4),
    ("emulation_failure.ndata", 36, 4),
    ("emulation_failure.flags", 40, 8),
    ("emulation_failure.insn_size", 48, 1),
    ("emulation_failure.insn_bytes", 49, 15),
    ("msr.error", 32, 1),
    ("msr.reason", 40, 4),
    ("msr.index", 44, 4),
    ("msr.data", 48, 8),
    ("kvm_valid_regs", 288, 8),
    ("kvm_dirty_regs", 296, 8),
]


@pytest.mark.parametrize("field,offset,size", KVM_RUN_LAYOUT, ids=[c[0] for c in KVM_RUN_LAYOUT])
def test_kvm_run_field_offset_and_size(field: str, offset: int, size: int) -> None:
    off, ctype = _field(field)
    assert (off, ctypes.sizeof(ctype)) == (offset, size)


def test_kvm_run_exit_union_is_256_bytes_at_32() -> None:
    assert KvmRun.u.offset == 32
    assert ctypes.sizeof(_UNION) == 256


def test_kvm_run_fields_alias_the_same_bytes() -> None:
    """The union members overlay: writing msr.reason is reading internal.data[0]'s low half."""
    run = KvmRun()
    run.msr.reason, run.msr.index = 2, 0x12345678
    assert run.internal.data[0] == 0x12345678_00000002
    run.emulation_failure.insn_bytes[0] = 0x0F
    assert bytes(run)[49] == 0x0F


# ---------------------------------------------------------------- numbers, against the document

def _kvm_exit_table() -> dict[int, str]:
    out = {}
    for cells in _table_rows(_section("### 10.1 `KVM_EXIT_*`")):
        for num, name in zip(cells[0::2], cells[1::2]):
            if num.isdigit() and "[ver]" not in name:
                out[int(num)] = name.split()[0]
    return out


def test_kvm_exit_numbers_equal_reference() -> None:
    ref = _kvm_exit_table()
    assert len(ref) >= 41
    ours = {e.value: e.name for e in KvmExit}
    assert ours == ref


def test_kvm_internal_error_suberrors_equal_reference() -> None:
    text = _section("### 10.1 `KVM_EXIT_*`")
    line = next(ln for ln in text.splitlines() if ln.startswith("`KVM_INTERNAL_ERROR_*`"))
    ref = {name: int(num) for name, num in re.findall(r"`(\w+)` (\d+)", line)}
    assert ref == {"EMULATION": 1, "SIMUL_EX": 2, "DELIVERY_EV": 3, "UNEXPECTED_EXIT_REASON": 4}
    assert {e.name: e.value for e in KvmInternalError} == ref


def vmx_exit_reason_table() -> dict[int, tuple[str, str]]:
    """Reference §1.2 as {number: (EXIT_REASON name, handler cell)}; the 19–27 row is expanded."""
    out: dict[int, tuple[str, str]] = {}
    for cells in _table_rows(_section("### 1.2 Exit reasons")):
        num, names, handler = cells[0], cells[1], cells[2]
        if m := re.fullmatch(r"(\d+)\s*[–-]\s*(\d+)", num):
            lo, hi = int(m.group(1)), int(m.group(2))
            listed = [n.strip() for n in names.split(",")]
            assert len(listed) == hi - lo + 1, cells
            for i, n in enumerate(listed):
                out[lo + i] = (n, handler)
        else:
            out[int(num)] = (names.split()[0], handler)
    return out


def test_exit_reason_numbers_equal_reference() -> None:
    ref = {n: name for n, (name, _) in vmx_exit_reason_table().items()}
    assert len(ref) >= 60
    assert {r.value: r.name for r in ExitReason} == ref


def test_emultype_values_equal_reference() -> None:
    ref = {}
    for cells in _table_rows(_section("### 6.1 `EMULTYPE_*`")):
        flag, value = cells[0].strip("`"), cells[1]
        if "[ver]" in cells[1] or "[ver]" in cells[2]:
            continue
        m = re.match(r"`1<<(\d+)`", value)
        assert m, cells
        ref[flag.removeprefix("EMULTYPE_")] = 1 << int(m.group(1))
    assert len(ref) == 9
    assert {f.name: f.value for f in EmulType} == ref
