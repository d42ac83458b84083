"""kvm-unit-tests' `<arch>/unittests.cfg` (docs/unittests.txt), read as scripts/common.bash reads it.

`for_each_unittest` is a line loop: `[name]` starts a test, `key = value` lines (leading and
trailing blanks stripped, as bash's `read -r`) set its parameters, a triple-quoted value of
qemu_params/extra_params runs to the closing quotes, and every other line (comments, blank
lines, unknown keys) is ignored.  We mirror that, and keep the line of each section for messages.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from kvmsim.errors import ScenarioError

DEFAULT_TIMEOUT = "90s"   # scripts/runtime.bash: run() when neither TIMEOUT nor the cfg gives one
DEFAULT_MEM_MIB = 128     # QEMU's pc machine default (x86/run passes no -m)

_SECTION = re.compile(r"^\[(.*)\]$")
_KEY = re.compile(r"^([A-Za-z_]+) *= *(.*)$")
_PARAMS_KEYS = ("qemu_params", "extra_params")   # extra_params: the older alias (docs/unittests.txt)


@dataclass
class UnitTest:
    """One `[name]` section: its raw parameters, and the QEMU options kvmsim reads out of them."""

    name: str
    line: int
    file: str = ""
    smp: str = "1"
    test_args: str = ""
    qemu_params: str = ""
    groups: list[str] = field(default_factory=list)
    arch: str = ""
    machine: str = ""
    check: list[tuple[str, str]] = field(default_factory=list)   # (path, value) pairs
    accel: str = ""
    timeout: str = ""
    disabled_if: str = ""

    @property
    def smp_count(self) -> int | None:
        """smp as a number (None for `$MAX_SMP` or anything else that is not one)."""
        try:
            return int(self.smp, 0)
        except ValueError:
            return None

    @property
    def qemu_argv(self) -> list[str]:
        """qemu_params split as the shell would (no expansion); unbalanced quotes split on blanks."""
        try:
            return shlex.split(self.qemu_params, comments=False)
        except ValueError:
            return self.qemu_params.split()

    def qemu_option(self, opt: str) -> str | None:
        """The value of the last `opt VALUE` in qemu_params (QEMU: the last one wins)."""
        argv, val = self.qemu_argv, None
        for i, a in enumerate(argv[:-1]):
            if a == opt:
                val = argv[i + 1]
        return val

    @property
    def args(self) -> str:
        """The guest's command line arguments: test_args, or an old-style `-append "..."`, unquoted."""
        text = self.test_args if self.test_args else (self.qemu_option("-append") or "")
        if not self.test_args:
            return text                   # already unquoted by qemu_argv
        try:
            return " ".join(shlex.split(text))
        except ValueError:
            return text

    @property
    def cpu(self) -> str | None:
        """`-cpu MODEL,+feat,-feat` of qemu_params."""
        return self.qemu_option("-cpu")

    @property
    def mem_mib(self) -> int:
        """`-m N` (MiB, or with a k/M/G/T suffix) of qemu_params; QEMU's 128 MiB default."""
        m = self.qemu_option("-m")
        if m is None:
            return DEFAULT_MEM_MIB
        mm = re.fullmatch(r"(\d+)([kKmMgGtT]?)[bB]?", m.split(",")[0].removeprefix("size="))
        if not mm:
            return DEFAULT_MEM_MIB
        n, unit = int(mm.group(1)), mm.group(2).upper() or "M"
        return {"K": n // 1024, "M": n, "G": n << 10, "T": n << 20}[unit]

    @property
    def timeout_seconds(self) -> float:
        """timeout as seconds (coreutils `timeout` syntax: N, Ns, Nm, Nh, Nd; 90s by default)."""
        return parse_duration(self.timeout or DEFAULT_TIMEOUT)


def parse_duration(text: str) -> float:
    """A coreutils `timeout` duration: a number with an optional s/m/h/d suffix."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _set(t: UnitTest, key: str, value: str) -> None:
    if key == "file":
        t.file = value
    elif key == "smp":
        t.smp = value
    elif key == "test_args":
        t.test_args = value
    elif key in _PARAMS_KEYS:
        t.qemu_params = value
    elif key == "groups":
        t.groups = value.split()
    elif key == "check":
        t.check = [(p.split("=", 1)[0], p.split("=", 1)[1] if "=" in p else "") for p in value.split()]
    elif key in ("arch", "machine", "accel", "timeout", "disabled_if"):
        setattr(t, key, value)
    # other keys (kvmtool_params, ...) are not kvmsim's: ignored, as for_each_unittest ignores unknown lines


def parse_cfg(text: str) -> list[UnitTest]:
    """The tests of a unittests.cfg text, in file order."""
    tests: list[UnitTest] = []
    cur: UnitTest | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, lineno = lines[i].strip(), i + 1
        i += 1
        if m := _SECTION.match(line):
            cur = UnitTest(name=m.group(1), line=lineno)
            tests.append(cur)
            continue
        m = _KEY.match(line)
        if cur is None or m is None:
            continue
        key, value = m.group(1), m.group(2)
        if key in _PARAMS_KEYS and value.startswith('"""'):
            parts, rest = [], value[3:]
            while not rest.rstrip().endswith('"""') and i < len(lines):   # unterminated: to the end, as bash
                parts.append(rest.removesuffix("\\"))
                rest, i = lines[i], i + 1
            parts.append(rest.rstrip().removesuffix('"""'))
            value = " ".join(p.strip() for p in parts if p.strip())
        _set(cur, key, value)
    return [t for t in tests if t.name]


def read_cfg(path: Path) -> list[UnitTest]:
    """parse_cfg of a file; a missing or unreadable file is bad input (status 2)."""
    try:
        return parse_cfg(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as e:
        raise ScenarioError(str(path), None, f"cannot read the kvm-unit-tests config: {e.strerror or e}") from None
