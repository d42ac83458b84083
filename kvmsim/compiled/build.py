"""Build, inspect and remove the compiled modules (`python -m kvmsim.compiled build|status|clean`).

build: cythonize the table (generated C under the user's cache, keyed by the tree, so the repo
only gains the .so files) and compile each module whose C is newer than its extension or whose
manifest entry no longer matches, -j 2, in a temporary directory; each new extension is renamed
into place (a running process keeps the one it mapped), and the manifest is written last, only
after every module built.  No C compiler, no Python headers or no Cython: one notice line, and
kvmsim runs its pure-Python source as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from kvmsim import compiled
from kvmsim.scenario.guest_build import cache_dir

CYTHON_DIRECTIVES = {"language_level": 3}   # pure-Python mode: the .py semantics (and a .pxd beside it)
CFLAGS = ["-g0"]   # Python's CFLAGS say -g: debug info for Cython's large C files costs build time, not speed


def c_dir() -> Path:
    """Where the generated C lives: $KVMSIM_CACHE_DIR's or the XDG cache's kvmsim/compiled/<tree key>."""
    key = hashlib.sha256(compiled.ROOT.encode()).hexdigest()[:12]
    return cache_dir().parent / "compiled" / key


def missing_toolchain() -> str | None:
    """Why nothing can be built here (None: Cython, setuptools, a C compiler and Python.h all exist)."""
    try:
        import Cython  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install 'kvmsim[compiled]')"
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        return f"no Python headers ({include}/Python.h; e.g. apt-get install python3-dev)"
    return None


def build(jobs: int = 2, force: bool = False, quiet: bool = False) -> int:
    """Build what is out of date; 0 also when the toolchain is missing (the notice says so)."""
    why = missing_toolchain()
    if why is not None:
        print(f"kvmsim: compiled modules not built: {why}; running the pure-Python source", file=sys.stderr)
        return 0
    from Cython import __version__ as cython_version
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    t0 = time.monotonic()
    old = compiled.read_manifest()
    if old is not None and old.get("cython") != cython_version:
        old, force = None, True                      # another Cython: rebuild everything
    old_recs = old.get("modules", {}) if old else {}
    digests = {m: compiled.source_digest(m) for m in compiled.MODULES}
    cdir = c_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(compiled.ROOT)                          # cythonize and build_ext name modules by relative paths
    try:
        for m in compiled.MODULES:                   # a changed source regenerates its C, whatever the mtimes
            rec = old_recs.get(m, {})
            if [rec.get("py"), rec.get("pxd")] != list(digests[m]):
                (cdir / compiled.rel_path(m, ".c")).unlink(missing_ok=True)
        exts = [Extension(m, [compiled.rel_path(m, ".py")], extra_compile_args=CFLAGS) for m in compiled.MODULES]
        exts = cythonize(exts, build_dir=str(cdir), compiler_directives=CYTHON_DIRECTIVES, nthreads=jobs,
                         force=force, quiet=True)
        todo = []
        for ext in exts:
            stamp = compiled.so_stamp(ext.name)
            rec = old_recs.get(ext.name, {})
            fresh = (stamp is not None and rec.get("so") == list(stamp)
                     and [rec.get("py"), rec.get("pxd")] == list(digests[ext.name])
                     and os.stat(ext.sources[0]).st_mtime_ns <= stamp[1])
            if force or not fresh:
                todo.append(ext)
        if todo:
            if os.path.exists(compiled.MANIFEST):
                os.unlink(compiled.MANIFEST)         # from here until the end the tree is not a complete build
            with tempfile.TemporaryDirectory(prefix="kvmsim-compiled-") as tmp:
                dist = Distribution({"name": "kvmsim-compiled", "ext_modules": todo})
                cmd = dist.get_command_obj("build_ext")
                cmd.build_lib, cmd.build_temp, cmd.parallel, cmd.inplace = tmp, os.path.join(tmp, "t"), jobs, 0
                cmd.ensure_finalized()
                if quiet:
                    from distutils import log   # setuptools' bundled distutils: quiet the per-file lines
                    log.set_threshold(log.WARN)
                cmd.run()
                for ext in todo:
                    built = os.path.join(tmp, compiled.rel_path(ext.name, compiled.EXT_SUFFIX))
                    os.replace(built, compiled.rel_path(ext.name, compiled.EXT_SUFFIX))
    except Exception as e:   # a Cython or compiler error: the guard keeps the source in use (no manifest)
        print(f"kvmsim: compiled modules: build failed ({type(e).__name__}: {e}); running the pure-Python source",
              file=sys.stderr)
        return 1
    finally:
        os.chdir(here)
    write_manifest(cython_version, digests)
    if not quiet or todo:
        print(f"kvmsim: compiled modules: {len(todo)} of {len(compiled.MODULES)} built "
              f"({time.monotonic() - t0:.1f} s, Cython {cython_version})", file=sys.stderr)
    return 0


def write_manifest(cython_version: str, digests: dict[str, tuple[str, str | None]] | None = None) -> None:
    """Record each built module's source hashes and extension stamp (atomically).  With `digests`
    (taken before the build), a module whose source changed meanwhile is left out: stale."""
    recs = {}
    for m in compiled.MODULES:
        stamp = compiled.so_stamp(m)
        now = compiled.source_digest(m)
        if stamp is None or (digests is not None and now != digests[m]):
            continue
        recs[m] = {"py": now[0], "pxd": now[1], "so": list(stamp)}
    doc = {"format": compiled.MANIFEST_FORMAT, "ext_suffix": compiled.EXT_SUFFIX, "cython": cython_version,
           "modules": recs}
    tmp = compiled.MANIFEST + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, compiled.MANIFEST)


def status() -> int:
    """Print each table module's state and whether a new process would run the compiled path."""
    states = compiled.check()
    width = max(len(s.module) for s in states)
    for s in states:
        print(f"{s.module:<{width}}  {s.state}{'  (' + s.why + ')' if s.why and s.state != 'pure' else ''}")
    n = sum(s.state == "compiled" for s in states)
    if compiled.pure_forced():
        print("KVMSIM_PURE is set: the pure-Python source runs")
    elif n == len(states):
        print(f"compiled path in use: all {n} modules")
    elif n == 0 and all(s.state == "pure" for s in states):
        print("pure Python: nothing built (python -m kvmsim.compiled build)")
    else:
        print(f"pure Python: {len(states) - n} of {len(states)} modules not current "
              "(all or nothing; python -m kvmsim.compiled build)")
    return 0


def clean() -> int:
    """Remove the extension modules (any .so beside a kvmsim .py), the manifest and the cached C."""
    removed = 0
    for so in Path(compiled.ROOT, "kvmsim").rglob("*.so"):
        stem = so.name.split(".", 1)[0]
        if so.with_name(stem + ".py").exists():
            so.unlink()
            removed += 1
    for c in Path(compiled.ROOT, "kvmsim").rglob("*.c"):   # C left beside a .py by a hand-run cythonize
        if c.with_suffix(".py").exists() and c.read_bytes()[:40].startswith(b"/* Generated by Cython"):
            c.unlink()
    Path(compiled.MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(c_dir(), ignore_errors=True)
    print(f"kvmsim: compiled modules: {removed} removed; the pure-Python source runs", file=sys.stderr)
    return 0
