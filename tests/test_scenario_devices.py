"""port-sequence / mmio-sequence devices and the Python device hook (issue 10 point 9):
bad input is a status-2 `file:line: error:` from `check` and `run` alike; a user's device that
raises during a run ends it with stop reason device-error naming the class (status 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario
from badinput import assert_bad_input

HEAD = ("name: t\ndescription: devices\nguest: {asm: hlt, mode: long64}\n"
        "devices:\n  - {type: serial16550}\n  - {type: debug-exit}\n")

GOOD_DEV = """
class Dev:
    def __init__(self, scale=1):
        self.scale, self.n = scale, 0
    def read(self, offset, size):
        self.n += 1
        return (offset + self.n * self.scale) & ((1 << (8 * size)) - 1)
    def write(self, offset, size, value):
        self.last = value
    def state(self):
        return {"n": self.n}
"""

# module files written beside the YAML: name -> source
MODULES = {
    "good_dev": GOOD_DEV,
    "broken_syntax": "class Dev:\n    def read(self, offset, size)\n        return 0\n",
    "raises_on_import": "raise RuntimeError('no hardware here')\n",
    "no_write": "class Dev:\n    def read(self, offset, size):\n        return 0\n",
    "bad_write": "class Dev:\n    def read(self, offset, size):\n        return 0\n"
                 "    def write(self, value):\n        pass\n",
    "bad_init": GOOD_DEV.replace("self.scale, self.n = scale, 0", "raise ValueError('scale must be even')"),
    "not_a_class": "Dev = 42\n",
}

# name: (YAML after HEAD, the line the error names, text the message contains)
CASES = {
    "sequence-empty": ("  - {type: port-sequence, port: 0x64, values: []}\n", 7, "at least 1 item"),
    "sequence-value-too-wide": ("  - {type: port-sequence, port: 0x64, size: 1, values: [1, 0x100]}\n", 7,
                                "wider than the register"),
    "sequence-after-typo": ("  - {type: mmio-sequence, gpa: 0xd0000000, values: [1], after: loop}\n", 7,
                            "'hold' or 'repeat'"),
    "sequence-port-past-0xffff": ("  - {type: port-sequence, port: 0xffff, size: 2, values: [1]}\n", 7,
                                  "past port 0xffff"),
    "sequence-overlaps-debug-exit": ("  - {type: port-sequence, port: 0xf6, size: 4, values: [1]}\n", 7,
                                     "overlaps devices[1] 'debug-exit'"),
    "mmio-sequence-in-ram": ("  - {type: mmio-sequence, gpa: 0x1000, values: [1]}\n", 7, "inside RAM"),
    "mmio-sequences-overlap": ("  - {type: mmio-sequence, gpa: 0xd0000000, size: 8, values: [1], name: a}\n"
                               "  - {type: mmio-sequence, gpa: 0xd0000004, values: [1], name: b}\n", 8,
                               "on the mmio bus"),
    "python-no-module": ("  - {type: python, class: 'nowhere_dev:Dev', port: 0x60}\n", 7,
                         "no module 'nowhere_dev'"),
    "python-bad-spec": ("  - {type: python, class: 'good_dev.Dev', port: 0x60}\n", 7, "expected 'module:Class'"),
    "python-syntax-error": ("  - {type: python, class: 'broken_syntax:Dev', port: 0x60}\n", 7,
                            "SyntaxError"),
    "python-import-raises": ("  - {type: python, class: 'raises_on_import:Dev', port: 0x60}\n", 7,
                             "RuntimeError: no hardware here"),
    "python-no-class": ("  - {type: python, class: 'good_dev:Device', port: 0x60}\n", 7,
                        "has no class 'Device' (it has: Dev)"),
    "python-not-a-class": ("  - {type: python, class: 'not_a_class:Dev', port: 0x60}\n", 7, "not a class"),
    "python-no-write": ("  - {type: python, class: 'no_write:Dev', port: 0x60}\n", 7, "no method write"),
    "python-wrong-signature": ("  - {type: python, class: 'bad_write:Dev', port: 0x60}\n", 7,
                               "write must take (offset, size, value)"),
    "python-unknown-arg": ("  - {type: python, class: 'good_dev:Dev', port: 0x60, args: {scael: 2}}\n", 7,
                           "does not take these args"),
    "python-init-raises": ("  - {type: python, class: 'bad_init:Dev', port: 0x60}\n", 7,
                           "ValueError: scale must be even"),
    "python-port-and-gpa": ("  - {type: python, class: 'good_dev:Dev', port: 0x60, gpa: 0xd0000000}\n", 7,
                            "exactly one of 'gpa' (MMIO) or 'port' (PIO)"),
    "python-overlaps-serial": ("  - {type: python, class: 'good_dev:Dev', port: 0x3f0, size: 16}\n", 7,
                               "overlaps devices[0] 'serial16550'"),
}


def _write(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    for mod, src in MODULES.items():
        (tmp_path / f"{mod}.py").write_text(src)
    f = tmp_path / name
    f.write_text(HEAD + body)
    return f


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_device_is_status_2_with_file_line(case: str, command: str, tmp_path: Path, capsys) -> None:
    body, line, fragment = CASES[case]
    assert_bad_input(command, _write(tmp_path, body), None, line, fragment, capsys)


def _guest(tmp_path: Path, asm: str, devices: str, expect: str = "") -> Path:
    for mod, src in MODULES.items():
        (tmp_path / f"{mod}.py").write_text(src)
    f = tmp_path / "g.yaml"
    text = (f"name: g\ndescription: d\nguest:\n  mode: long64\n  asm: |\n"
            + "".join(f"    {line}\n" for line in asm.strip().splitlines())
            + "devices:\n  - {type: debug-exit}\n" + devices + expect)
    f.write_text(text)
    return f


def test_python_device_on_ports_reads_writes_and_state(tmp_path: Path) -> None:
    f = _guest(tmp_path, """
        inb $0x61, %al
        movl %eax, %ebx
        inw $0x60, %ax
        movl %eax, %ecx
        movl $0x12345678, %eax
        outl %eax, $0x62
        movl $0, %eax
        outl %eax, $0xf4
    """, "  - {type: python, name: p, class: 'good_dev:Dev', port: 0x60, size: 4, args: {scale: 16}}\n")
    res = run_scenario(load_scenario(f))
    assert (res.stop.reason, res.stop.code) == ("debug-exit", 0)
    assert res.regs["rbx"] & 0xFF == 0x11           # offset 1 + 1 * 16
    assert res.regs["rcx"] & 0xFFFF == 0x20         # offset 0 + 2 * 16
    assert res.devices["p"] == {"reads": 2, "writes": 1, "n": 2}
    writes = [e.fields for e in res.userspace if e.fields.get("port") == 0x62]
    assert writes and writes[0]["data"] == "78563412"


RAISING = """
class Dev:
    def read(self, offset, size):
        raise KeyError(offset)
    def write(self, offset, size, value):
        pass
"""
BAD_READ = RAISING.replace("raise KeyError(offset)", "return 'ready'")
BAD_STATE = RAISING.replace("raise KeyError(offset)", "return 1") + "    def state(self):\n        return {'x': -1}\n"


@pytest.mark.parametrize("src,fragment", [
    (RAISING, "raised in read(offset=0x4, size=1): KeyError: 4"),
    (BAD_READ, "returned 'ready', not an int of 1 byte(s)"),
    (BAD_STATE, "state() returned {'x': -1}"),
])
def test_a_raising_python_device_ends_the_run_as_device_error(src: str, fragment: str, tmp_path: Path,
                                                               capsys) -> None:
    (tmp_path / "flaky.py").write_text(src)
    f = _guest(tmp_path, """
        movl $0xd0000000, %r8d
        movb 4(%r8), %al
        movl $0, %eax
        outl %eax, $0xf4
    """, "  - {type: python, name: flaky, class: 'flaky:Dev', gpa: 0xd0000000}\n")
    res = run_scenario(load_scenario(f))
    assert res.stop.reason == "device-error"
    assert "python device 'flaky' (flaky:Dev)" in res.stop.detail and fragment in res.stop.detail
    capsys.readouterr()
    assert main(["run", "--json", str(f)]) == 1       # the run failed; not bad input, not a kvmsim bug
    doc = json.loads(capsys.readouterr().out)
    docs = doc if isinstance(doc, list) else doc.get("results", [doc])
    assert docs[0]["result"]["stop"]["reason"] == "device-error"


def test_device_error_can_be_the_expected_stop(tmp_path: Path) -> None:
    (tmp_path / "flaky.py").write_text(RAISING)
    f = _guest(tmp_path, "inb $0x70, %al\nhlt\n",
               "  - {type: python, class: 'flaky:Dev', port: 0x70}\n",
               "expect:\n  stop: {reason: device-error}\n")
    assert main(["run", str(f)]) == 0


def test_scenario_local_modules_do_not_collide(tmp_path: Path) -> None:
    """Two scenario directories may each ship a `dev.py`: each YAML gets its own."""
    for d, val in (("a", 0x11), ("b", 0x22)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "dev.py").write_text(f"class D:\n    def read(self, o, s):\n        return {val}\n"
                                             "    def write(self, o, s, v):\n        pass\n")
    got = []
    for d in ("a", "b"):
        f = tmp_path / d / "s.yaml"
        f.write_text("name: s\ndescription: d\nguest:\n  mode: long64\n  asm: |\n    inb $0x70, %al\n"
                     "    movl %eax, %ebx\n    hlt\ndevices:\n  - {type: python, class: 'dev:D', port: 0x70}\n")
        got.append(run_scenario(load_scenario(f)).regs["rbx"] & 0xFF)
    assert got == [0x11, 0x22]


def test_sequence_register_hold_and_repeat() -> None:
    from kvmsim.vmm.devices.sequence import SequenceRegister

    hold = SequenceRegister(size=2, values=[0x0102, 0x0304], after="hold")
    assert [hold.io_read(0, 2) for _ in range(4)] == [b"\x02\x01", b"\x04\x03", b"\x04\x03", b"\x04\x03"]
    rep = SequenceRegister(size=2, values=[0x0102, 0x0304], after="repeat")
    assert [rep.io_read(1, 1) for _ in range(4)] == [b"\x01", b"\x03", b"\x01", b"\x03"]
    rep.io_write(1, b"\xaa")
    assert rep.counters == {"reads": 4, "writes": 1, "last_write": 0xAA00}


def test_a_constructor_failing_only_at_run_is_bad_input_not_a_crash(tmp_path: Path, capsys) -> None:
    """Loading builds one trial instance; if building it again for the run raises, that is a
    status-2 error naming the device's line (never a traceback)."""
    (tmp_path / "once.py").write_text(
        "class Dev:\n    built = 0\n    def __init__(self):\n        Dev.built += 1\n"
        "        if Dev.built > 1:\n            raise OSError('already claimed')\n"
        "    def read(self, offset, size):\n        return 0\n    def write(self, offset, size, value):\n        pass\n")
    f = _guest(tmp_path, "hlt", "  - {type: python, class: 'once:Dev', port: 0x70}\n")
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{f}:9: error: ") and "raised in __init__: OSError: already claimed" in err, err
    assert "Traceback" not in err
