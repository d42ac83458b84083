"""Build cvmm.c with the system compiler into the cache, and run it on a bench loop.

Not a kernel model.  The binary lives under the kvmsim cache directory, named by a hash of the
source and the compiler's version line, so an edit or a new compiler rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from kvmsim.baseline.state import write_state
from kvmsim.scenario.guest_build import cache_dir
from kvmsim.scenario.runner import Machine

SOURCE = Path(__file__).with_name("cvmm.c")
CFLAGS = ("-O2", "-Wall")


def compiler() -> str | None:
    """$CC, else cc or gcc on PATH; None without one."""
    cc = os.environ.get("CC")
    return shutil.which(cc) if cc else (shutil.which("cc") or shutil.which("gcc"))


def build() -> tuple[Path | None, str]:
    """(path of the built C VMM, "") or (None, why not)."""
    cc = compiler()
    if cc is None:
        return None, "no C compiler (cc/gcc, or $CC) on PATH"
    if not SOURCE.is_file():
        return None, f"{SOURCE} is missing from this install"
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{cc} --version failed: {e}"
    first = version.splitlines()[0] if version else cc
    key = hashlib.sha256(SOURCE.read_bytes() + first.encode() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    out = cache_dir().parent / "baseline" / f"cvmm-{key}"
    if out.exists():
        return out, ""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    r = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        return None, f"{cc} failed on cvmm.c: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    os.replace(tmp, out)
    return out, ""


def run_cvmm(binary: Path, m: Machine, iters: int, exit_port: int = 0xF4) -> tuple[float, int]:
    """Run the loop of kvm-backend machine `m` `iters` times in the C VMM: (round trips/s, round trips)."""
    fd, state = tempfile.mkstemp(prefix="kvmsim-cvmm-", suffix=".state")
    os.close(fd)
    try:
        write_state(m, Path(state), iters)
        r = subprocess.run([str(binary), state, str(exit_port)], capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(state)
    if r.returncode != 0:
        raise RuntimeError(f"cvmm: {r.stderr.strip() or f'exit status {r.returncode}'}")
    n, seconds = r.stdout.split()
    return int(n) / float(seconds), int(n)
