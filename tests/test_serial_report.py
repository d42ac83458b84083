"""Serial output in the report is wrapped and bounded however much the guest prints; --serial-out
FILE has every byte, and --json at most SERIAL_JSON_MAX characters with the gap stated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.report import MAX_SERIAL_LINES, SERIAL_WIDTH, serial_lines
from kvmsim.scenario.guest_build import binutils_available

LINES, WIDTH = 120, 250   # the guest prints LINES lines of WIDTH letters

# Line i is WIDTH letters 'a' + (i + j) % 26, then '\n'; out to the 16550's THR (no LSR poll).
GUEST = f"""\
    .include "kvmsim.inc"
    GUEST_ENTRY
    xorl %esi, %esi
line:
    xorl %edi, %edi
char:
    leal (%rsi,%rdi), %eax
    xorl %edx, %edx
    movl $26, %ecx
    divl %ecx
    leal 97(%rdx), %eax
    movw $0x3f8, %dx
    outb %al, %dx
    incl %edi
    cmpl ${WIDTH}, %edi
    jne char
    movb $10, %al
    outb %al, %dx
    incl %esi
    cmpl ${LINES}, %esi
    jne line
    EXIT 0
"""


def _expected() -> str:
    return "".join("".join(chr(97 + (i + j) % 26) for j in range(WIDTH)) + "\n" for i in range(LINES))


def test_serial_lines_wrap_and_bound() -> None:
    text = _expected()
    lines = serial_lines(text)
    assert len(lines) == MAX_SERIAL_LINES + 1 and all(len(x) <= SERIAL_WIDTH for x in lines)
    pieces = [raw[i:i + SERIAL_WIDTH] for raw in text.rstrip("\n").split("\n")
              for i in range(0, len(raw), SERIAL_WIDTH)]
    head, tail = MAX_SERIAL_LINES * 3 // 4, MAX_SERIAL_LINES // 4
    assert lines[:head] == pieces[:head] and lines[-tail:] == pieces[-tail:]
    assert lines[head] == f"… {len(pieces) - head - tail} lines omitted (--serial-out FILE for all of it)"
    assert serial_lines("short\nlines\n") == ["short", "lines"]


@pytest.mark.skipif(not binutils_available(), reason="needs GNU binutils")
def test_cli_serial_out_has_everything(tmp_path: Path, capsys) -> None:
    y = tmp_path / "chatty.yaml"
    y.write_text("name: chatty\ndescription: d\nguest:\n  mode: long64\n  asm: |\n"
                 + "".join("    " + line.strip() + "\n" for line in GUEST.splitlines())
                 + "limits: {max_exits: 100000}\n")
    out_file = tmp_path / "serial.txt"
    assert main(["run", "--serial-out", str(out_file), str(y)]) == 0
    report = capsys.readouterr().out
    assert out_file.read_text() == _expected()
    shown = [line[4:] for line in report.splitlines() if line.startswith("  | ")]
    assert len(shown) == MAX_SERIAL_LINES + 1 and max(map(len, shown)) <= SERIAL_WIDTH
    assert len(report) < 64 * 1024
    assert main(["run", "--json", str(y)]) == 0
    assert json.loads(capsys.readouterr().out)["result"]["serial"] == _expected()   # under the JSON bound


def test_json_serial_bound() -> None:
    from kvmsim.cli import SERIAL_JSON_MAX, _bounded_serial

    text = "".join(chr(65 + i % 26) for i in range(3 * SERIAL_JSON_MAX))
    doc = _bounded_serial({"serial": text})
    half = SERIAL_JSON_MAX // 2
    assert doc["serial"] == text[:half] + text[-half:]
    assert doc["serial_omitted"] == {"at": half, "chars": len(text) - SERIAL_JSON_MAX}
    assert _bounded_serial({"serial": "ok\n"}) == {"serial": "ok\n"}
