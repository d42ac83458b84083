"""The import guard: a compiled module never shadows a .py edited after the build.

Python's own finder prefers `x.cpython-*.so` to `x.py` in the same directory.  This finder, first
on sys.meta_path (installed by kvmsim/__init__.py), answers only for a kvmsim module that has an
extension file beside its .py: it lets the extension load when the compiled path is on, and
otherwise hands back the .py source.  The compiled path is on only when every table module's
extension matches the manifest (all or nothing: the modules were built together), and
KVMSIM_PURE=1 is not set.  The check (hashing the sources, a few ms) runs at the first such
import, not at `import kvmsim`; being off for staleness prints one line on stderr, once.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from importlib.util import spec_from_file_location
from typing import Sequence

from kvmsim import compiled

WARNED_ENV = "KVMSIM_COMPILED_WARNED"   # set once warned, so child processes (kvmsim run from tests) stay quiet


class CompiledGuard:
    """Meta-path finder: source instead of a stale or unvouched extension module."""

    def __init__(self) -> None:
        self._on: bool | None = None      # the compiled path, decided at the first extension met
        self.why = ""                     # why it is off (empty: on, or nothing built)
        self._listings: dict[str, frozenset[str]] = {}

    def decide(self) -> bool:
        """Whether the table's extension modules may load (computed once per process)."""
        if self._on is None:
            if compiled.pure_forced():
                self._on, self.why = False, "KVMSIM_PURE is set"
            else:
                bad = [s for s in compiled.check() if s.state != "compiled"]
                self._on = not bad
                if bad and all(s.state == "pure" for s in bad) and len(bad) == len(compiled.MODULES):
                    self.why = "not built"
                elif bad:
                    first = next((s for s in bad if s.state == "stale"), bad[0])
                    self.why = first.why + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                    self._warn()
        return self._on

    def _warn(self) -> None:
        """One line on stderr, once (also across child processes: they inherit WARNED_ENV)."""
        if os.environ.get(WARNED_ENV):
            return
        os.environ[WARNED_ENV] = "1"
        print(f"kvmsim: compiled modules not used ({self.why}): running the pure-Python source; "
              "rebuild with `make` or `python -m kvmsim.compiled build`", file=sys.stderr)

    def _listing(self, directory: str) -> frozenset[str]:
        got = self._listings.get(directory)
        if got is None:
            try:
                got = frozenset(os.listdir(directory))
            except OSError:
                got = frozenset()
            self._listings[directory] = got
        return got

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: object = None) -> ModuleSpec | None:
        if path is None or not fullname.startswith("kvmsim."):
            return None
        base = fullname.rpartition(".")[2]
        for directory in path:
            names = self._listing(directory)
            if base + ".py" not in names:
                continue
            if not any(base + sfx in names for sfx in EXTENSION_SUFFIXES):
                return None                                  # plain source: Python's own finder
            here = os.path.join(directory, base + ".py")
            table = (fullname in compiled.MODULES
                     and _same(here, os.path.join(compiled.ROOT, compiled.rel_path(fullname, ".py"))))
            if self.decide() and table:
                return None                                  # vouched for: the extension loads
            if not table and not compiled.pure_forced():     # an extension the build did not make
                ext = next(sfx for sfx in EXTENSION_SUFFIXES if base + sfx in names)
                stray = os.path.relpath(os.path.join(directory, base + ext), compiled.ROOT)
                self.why = f"{stray} is not from the build"
                self._warn()
            return spec_from_file_location(fullname, here)
        return None


def _same(a: str, b: str) -> bool:
    """Whether two paths are one file (the table's, not another copy of kvmsim on sys.path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


GUARD = CompiledGuard()


def install() -> None:
    """Put the guard first on sys.meta_path (once)."""
    if GUARD not in sys.meta_path:
        sys.meta_path.insert(0, GUARD)
