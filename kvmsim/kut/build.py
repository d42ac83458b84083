"""Where the kvm-unit-tests images come from: a built tree (--kut-dir), or the shared source
archive built once into the user's cache (`$XDG_CACHE_HOME/kvmsim/kut/<commit>/<arch>`).

The archive is looked for at $KVMSIM_KUT_ARCHIVE, else beside the repository in
../shared/kvm-unit-tests/kvm-unit-tests-*.tar.gz.  Building needs gcc, make and the binutils
kvmsim already uses; without them the message names what to install (status 2).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from kvmsim.errors import ScenarioError
from kvmsim.scenario.guest_build import cache_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
ARCHES = ("x86_64", "i386")
BUILD_TOOLS = ("gcc", "make", "ld", "objcopy")
BUILD_TIMEOUT = 900      # seconds for configure + make (about 20 s on 2 cores)


class KutTree:
    """A built kvm-unit-tests tree: x86/unittests.cfg, x86/*.flat, and the ARCH it was configured for."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def cfg(self) -> Path:
        return self.root / "x86" / "unittests.cfg"

    @property
    def flat_dir(self) -> Path:
        return self.root / "x86"

    @property
    def arch(self) -> str:
        """ARCH from config.mak (configure's --arch); x86_64 if it is absent."""
        try:
            m = re.search(r"^ARCH=(\S+)", (self.root / "config.mak").read_text(), re.M)
        except OSError:
            m = None
        return m.group(1) if m else "x86_64"


def open_tree(path: str | Path) -> KutTree:
    """--kut-dir DIR: a configured and built tree (bad input otherwise)."""
    t = KutTree(Path(path))
    if not t.cfg.is_file():
        raise ScenarioError(str(path), None, "not a kvm-unit-tests tree: no x86/unittests.cfg "
                            "(give the top directory of a tree built with ./configure && make)")
    if not any(t.flat_dir.glob("*.flat")):
        raise ScenarioError(str(path), None, "no x86/*.flat images: run ./configure && make in that tree first")
    return t


def find_archive() -> Path | None:
    """$KVMSIM_KUT_ARCHIVE, else the newest ../shared/kvm-unit-tests/kvm-unit-tests-*.tar.gz."""
    env = os.environ.get("KVMSIM_KUT_ARCHIVE")
    if env:
        return Path(env)
    found = sorted((REPO_ROOT.parent / "shared" / "kvm-unit-tests").glob("kvm-unit-tests-*.tar.gz"))
    return found[-1] if found else None


def archive_commit(archive: Path) -> str:
    """The commit in the archive's name (kvm-unit-tests-1da1819e.tar.gz -> 1da1819e)."""
    m = re.search(r"kvm-unit-tests-([0-9A-Za-z._-]+?)\.tar\.gz$", archive.name)
    return m.group(1) if m else "unknown"


def missing_tools() -> list[str]:
    return [t for t in BUILD_TOOLS if shutil.which(t) is None]


def cached_tree(archive: Path, arch: str) -> Path:
    return cache_dir().parent / "kut" / archive_commit(archive) / arch


def build_from_archive(arch: str = "x86_64", archive: Path | None = None, log=None) -> KutTree:
    """The archive's tree for `arch`, built into the cache the first time (locked, so parallel
    runs build it once); a failed build leaves nothing behind and says why (status 2)."""
    if arch not in ARCHES:
        raise ScenarioError(None, None, f"--arch {arch}: kvm-unit-tests x86 builds are {', '.join(ARCHES)}")
    archive = archive or find_archive()
    if archive is None or not archive.is_file():
        where = archive or REPO_ROOT.parent / "shared" / "kvm-unit-tests"
        raise ScenarioError(str(where), None, "no kvm-unit-tests archive (kvm-unit-tests-*.tar.gz): give a built "
                            "tree with --kut-dir DIR, or the archive with KVMSIM_KUT_ARCHIVE=FILE")
    dest = cached_tree(archive, arch)
    if (dest / "x86" / "unittests.cfg").is_file():
        return KutTree(dest)
    if missing := missing_tools():
        raise ScenarioError(str(archive), None, f"building kvm-unit-tests needs {', '.join(missing)}: install them "
                            "(Debian/Ubuntu: apt-get install gcc make binutils), or give a built tree with --kut-dir DIR")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{arch}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "x86" / "unittests.cfg").is_file():       # another process built it meanwhile
            return KutTree(dest)
        if log:
            log(f"building kvm-unit-tests {archive_commit(archive)} ({arch}) into {dest} ...")
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".build-{arch}-") as tmp:
            _extract(archive, Path(tmp))
            src = Path(tmp) / "kvm-unit-tests"
            # configure writes its own absolute paths (SRCDIR, ERRATATXT) into config.mak: build in place
            # under the final name's parent, then rename; the images do not embed the path.
            for cmd in (["./configure", f"--arch={arch}"], ["make", f"-j{os.cpu_count() or 1}"]):
                _run(cmd, src, archive)
            src.rename(dest)
    return KutTree(dest)


def _extract(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="data")
    except (OSError, tarfile.TarError) as e:
        raise ScenarioError(str(archive), None, f"cannot unpack: {e}") from None
    if not (into / "kvm-unit-tests" / "configure").is_file():
        raise ScenarioError(str(archive), None, "not a kvm-unit-tests source archive (no kvm-unit-tests/configure)")


def _run(cmd: list[str], cwd: Path, archive: Path) -> None:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ScenarioError(str(archive), None, f"{' '.join(cmd)}: {e}") from None
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise ScenarioError(str(archive), None, f"{' '.join(cmd)} failed (status {p.returncode}):\n{tail}")


def locate(kut_dir: str | None, arch: str | None, log=None) -> KutTree:
    """--kut-dir if given, else the archive's build for --arch (x86_64 by default)."""
    if kut_dir is not None:
        t = open_tree(kut_dir)
        if arch is not None and arch != t.arch:
            raise ScenarioError(kut_dir, None, f"--arch {arch}: that tree is configured for {t.arch}")
        return t
    return build_from_archive(arch or "x86_64", log=log)
