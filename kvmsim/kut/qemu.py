"""`kvmsim kut --qemu tcg|kvm`: the same test under QEMU, through kvm-unit-tests' own `x86/run`.

A reference, not a model: run_tests.sh's command for the test (`x86/run X.flat -smp N
<qemu_params> -append ARGS`, ACCEL=tcg or kvm, under coreutils `timeout` with the cfg's duration),
and its verdict from x86/run's status, which has QEMU's (code << 1) | 1 already folded
(scripts/arch-run.bash qemu_fixup_return_code): 0 PASS, 77 SKIP, 124 timeout, anything else FAIL.
Without qemu-system-x86_64 every test is SKIP with that reason.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from kvmsim.kut import outcome
from kvmsim.kut.cfg import UnitTest

QEMU = "qemu-system-x86_64"
RUN_PASS, RUN_SKIP, RUN_TIMEOUT = 0, 77, 124


def missing() -> str:
    """Why QEMU cannot run here ('' when it can)."""
    return "" if shutil.which(os.environ.get("QEMU", QEMU)) else f"{QEMU} not installed (apt-get install qemu-system-x86)"


def command(t: UnitTest, flat: Path, smp: int, timeout: float) -> list[str]:
    """run_tests.sh's command line for `t` (scripts/runtime.bash run())."""
    argv = ["timeout", "-k", "1s", "--foreground", f"{timeout:g}s", "./x86/run", f"x86/{flat.name}",
            "-smp", str(smp), *t.qemu_argv]
    if t.test_args:
        argv += ["-append", t.args]
    return argv


def run_dir(tree: Path) -> Path:
    """Where x86/run can run: the tree itself, or (when its config.mak names the directory it was
    built in and that is gone, as for the cache's builds) a directory of links to it whose
    config.mak names this tree's errata.txt; the shared tree is never written."""
    cfg = tree / "config.mak"
    text = cfg.read_text(encoding="utf-8", errors="replace") if cfg.exists() else ""
    m = re.search(r"^ERRATATXT=(.*)$", text, re.M)
    if not m or Path(m.group(1).strip()).exists():
        return tree
    mirror = Path(tempfile.gettempdir()) / "kvmsim-kut-qemu" / hashlib.sha1(str(tree).encode()).hexdigest()[:12]
    mirror.mkdir(parents=True, exist_ok=True)
    for entry in tree.iterdir():
        link = mirror / entry.name
        if entry.name != "config.mak" and not os.path.lexists(link):
            try:
                link.symlink_to(entry)
            except FileExistsError:     # another -j worker made it meanwhile
                pass
    tmp = mirror / f"config.mak.{os.getpid()}"
    tmp.write_text(text.replace(m.group(0), f"ERRATATXT={tree / 'errata.txt'}"), encoding="utf-8")
    tmp.replace(mirror / "config.mak")   # atomic: a parallel worker never reads half a file
    return mirror


def run(t: UnitTest, flat: Path, accel: str, smp: int, timeout: float) -> tuple[outcome.Outcome, str]:
    """Run `t` under QEMU (accel tcg or kvm) in its tree; the verdict and the log text."""
    tree = flat.parent.parent
    argv = command(t, flat, smp, timeout)
    env = {**os.environ, "ACCEL": accel, "QEMU": shutil.which(os.environ.get("QEMU", QEMU)) or QEMU}
    tree = run_dir(tree)
    try:
        p = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, errors="replace",
                           timeout=timeout + 30)
        status, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        status, text = RUN_TIMEOUT, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else ""
    log = f"$ ACCEL={accel} {shlex.join(argv)}\n{text}\n--- x86/run status {status}\n"
    summary = outcome.extract_summary(text)
    if status == RUN_PASS:
        return outcome.Outcome(t.name, "PASS", summary, reports=outcome.report_lines(text)), log
    if status == RUN_SKIP:
        return outcome.Outcome(t.name, "SKIP", summary, reports=outcome.report_lines(text)), log
    why = (f"timeout; duration={timeout:g}s" if status == RUN_TIMEOUT else
           "" if summary else "aborted" if status == outcome.ABORT_STATUS else f"status {status}")
    return outcome.Outcome(t.name, "FAIL", summary, reason=why, reports=outcome.report_lines(text)), log
