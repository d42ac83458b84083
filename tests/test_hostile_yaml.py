"""Hostile scenario files (alias bombs, deep nesting, NUL and non-UTF-8 bytes, huge files) are
status-2 errors naming the file and line, within 5 s and 200 MB, from `check`, `run` and `list`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmsim.scenario.loader import MAX_BYTES, MAX_DEPTH

# Runs the CLI in a child and prints its own peak RSS (KiB) on the last stderr line
# (VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking pytest process).
_CHILD = """
import re, sys
from kvmsim.cli import main
rc = main(sys.argv[1:])
hwm = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
print("maxrss", hwm, file=sys.stderr)
sys.exit(rc)
"""


def _alias_bomb() -> bytes:
    rows = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    return ("\n".join(rows) + "\nname: bomb\n").encode()


HOSTILE = {
    # name: (bytes, line the error names, text the message contains)
    "alias-bomb": (_alias_bomb(), 5, "aliases expand to more than"),
    "flow-depth-500": (b"name: x\ndescription: " + b"[" * 500 + b"]" * 500 + b"\n", 2, "nested deeper than"),
    "block-depth-500": (b"name: x\nguest:\n" + b"".join(b"  " * (i + 1) + b"k%d:\n" % i for i in range(500)),
                        MAX_DEPTH + 1, "nested deeper than"),
    "recursive-anchor": (b"name: x\ndescription: &a [*a]\n", 2, "refers to itself"),
    "nul-byte": (b"name: a\ndescription: b\x00c\nguest: {asm: hlt, mode: long64}\n", 2, "U+0000"),
    "latin1-byte": (b"name: a\n\ndescription: caf\xe9\n", 3, "not UTF-8"),
    "too-large": (b"name: a\ndescription: " + b"x" * MAX_BYTES + b"\n", None, "file too large"),
    "huge-int": (b"name: a\nguest: {asm: hlt, mode: long64}\nlimits: {max_exits: " + b"9" * 5000 + b"}\n",
                 None, "cannot be read"),
}


@pytest.mark.parametrize("command", ["check", "run", "list"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_bad_input_fast_and_small(case: str, command: str, tmp_path: Path) -> None:
    data, line, fragment = HOSTILE[case]
    f = tmp_path / f"{case}.yaml"
    f.write_bytes(data)
    argv = [str(tmp_path)] if command == "list" else [str(f)]
    p = subprocess.run([sys.executable, "-c", _CHILD, command, *argv], capture_output=True, text=True, timeout=5)
    assert p.returncode == 2, p.stderr
    err, _, last = p.stderr.rstrip().rpartition("\n")
    assert int(last.split()[1]) < 200 * 1024, f"peak RSS {last}"
    assert "Traceback" not in p.stderr
    if command == "list":  # the table names the file and the error
        assert f.name in p.stdout and fragment.split()[0] in p.stdout
        return
    where = f"{f}:{line}: error: " if line else f"{f}: error: "
    assert err.startswith(where), err
    assert fragment in err
