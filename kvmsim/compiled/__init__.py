"""The compiled exit path: the hot modules built with Cython from their unchanged .py source.

The .py files stay the source (Cython's pure-Python mode; a `.pxd` beside a .py, if any, types
it) and always work on their own: the extension modules are an optional speed-up built in place
(`python -m kvmsim.compiled build`, which `make` runs) and loaded only while the build manifest
vouches that each one was built from the source now beside it (guard.py).  `KVMSIM_PURE=1`
forces the pure-Python source everywhere.

This module is the table and the manifest check, shared by the import guard and the build; it
imports nothing heavy (it runs at `import kvmsim`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES

# The modules compiled, by dotted name.  kvm/kvm_main.py, x86.py and vmx.py are compiled too: the
# debugger finds the kfuncs live while guest code runs by their frames, and pins their probed twins
# for its session (probe.pin, debug/engine.py's KVM_RUN_PATH).  Not compiled, on purpose:
# emulate/__init__.py (re-exports), emulate/bench.py (the emulator bench's own timing loop: kept
# pure so the figure measures the emulator) and emulate/coverage.py (a report): nothing hot.
MODULES: tuple[str, ...] = (
    "kvmsim.kvm.emulate.codes",
    "kvmsim.kvm.vcpu",             # struct kvm, kvm_vcpu and its arch/stat parts as extension types (vcpu.pxd)
    "kvmsim.kvm.x86",
    "kvmsim.kvm.vmx",
    "kvmsim.kvm.kvm_main",
    "kvmsim.kvm.emulate.ctxt",
    "kvmsim.kvm.emulate.decode",
    "kvmsim.kvm.emulate.decode_cache",
    "kvmsim.kvm.emulate.em_basic",
    "kvmsim.kvm.emulate.em_branch",
    "kvmsim.kvm.emulate.em_system",
    "kvmsim.kvm.emulate.emulate",
    "kvmsim.kvm.emulate.fastop",
    "kvmsim.kvm.emulate.fetch",
    "kvmsim.kvm.emulate.flags",
    "kvmsim.kvm.emulate.memaccess",
    "kvmsim.kvm.emulate.opcode",
    "kvmsim.kvm.emulate.ops",
    "kvmsim.kvm.emulate.ramops",
    "kvmsim.kvm.emulate.segments",
    "kvmsim.kvm.emulate.tables",
    "kvmsim.kvm.emulate.task_switch",
    "kvmsim.kvm.emulate.vex",
    "kvmsim.kvm.x86_emulate",
    "kvmsim.kvm.mmu",
    "kvmsim.kvm.emulator_ops",
    "kvmsim.kvm.lapic",            # called on every entry and exit (the virtual clock, the TSC offset) ...
    "kvmsim.kvm.cr",               # ... CR8 in and out of kvm_run ...
    "kvmsim.kvm.kvm_cache_regs",
    "kvmsim.kvm.vmx_controls",
    "kvmsim.kvm.mmu_shadow",       # ... is_shadow_mmu on each emulation
    "kvmsim.kvm.pio",              # the fast PIO path (kvm_fast_pio, emulator_pio_in_out)
    "kvmsim.kvm.x86_exception",    # kvm_skip_emulated_instruction
    "kvmsim.hw.vmcs",              # the VMCS as an extension type (vmcs.pxd)
    "kvmsim.hw.cpu",
    "kvmsim.hw.registers",
    "kvmsim.hw.memory",
    "kvmsim.vmm.runloop",
    "kvmsim.vmm.bus",
    "kvmsim.vmm.devices.simple",
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the directory holding kvmsim/
MANIFEST = os.path.join(ROOT, "kvmsim", "compiled", "manifest.json")   # written by the build (gitignored)
EXT_SUFFIX = EXTENSION_SUFFIXES[0]   # what build_ext names the modules (.cpython-311-x86_64-linux-gnu.so)
MANIFEST_FORMAT = 1


def rel_path(module: str, ext: str) -> str:
    """A table module's file relative to ROOT: rel_path("kvmsim.hw.cpu", ".py") = "kvmsim/hw/cpu.py"."""
    return module.replace(".", "/") + ext


def source_digest(module: str) -> tuple[str, str | None]:
    """sha256 of the module's .py and of its .pxd (None without one): what the build is keyed by."""
    out: list[str | None] = []
    for ext in (".py", ".pxd"):
        try:
            with open(os.path.join(ROOT, rel_path(module, ext)), "rb") as f:
                out.append(hashlib.sha256(f.read()).hexdigest())
        except FileNotFoundError:
            out.append(None)
    return out[0] or "", out[1]


def so_stamp(module: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of the module's extension file, None if there is none."""
    try:
        st = os.stat(os.path.join(ROOT, rel_path(module, EXT_SUFFIX)))
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def read_manifest() -> dict | None:
    """The last complete build's record, None without one (or one from another format/Python)."""
    try:
        with open(MANIFEST, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("ext_suffix") != EXT_SUFFIX:
        return None
    return doc


@dataclass(frozen=True, slots=True)
class ModuleState:
    """One table module: 'compiled' (its extension matches the source), 'stale' or 'pure' (none built)."""

    module: str
    state: str
    why: str = ""


def check(manifest: dict | None = None) -> list[ModuleState]:
    """Each table module's state against the manifest (a few ms: hashes the sources)."""
    doc = read_manifest() if manifest is None else manifest
    recs = doc.get("modules", {}) if doc else {}
    out = []
    for mod in MODULES:
        stamp = so_stamp(mod)
        rec = recs.get(mod)
        if stamp is None:
            out.append(ModuleState(mod, "pure", "not built"))
            continue
        if not isinstance(rec, dict):
            out.append(ModuleState(mod, "stale", f"{rel_path(mod, EXT_SUFFIX)} is not in the build manifest"))
            continue
        py, pxd = source_digest(mod)
        if py != rec.get("py"):
            out.append(ModuleState(mod, "stale", f"{rel_path(mod, '.py')} changed since the build"))
        elif pxd != rec.get("pxd"):
            out.append(ModuleState(mod, "stale", f"{rel_path(mod, '.pxd')} changed since the build"))
        elif list(stamp) != rec.get("so"):
            out.append(ModuleState(mod, "stale", f"{rel_path(mod, EXT_SUFFIX)} was replaced after the build"))
        else:
            out.append(ModuleState(mod, "compiled"))
    return out


def pure_forced() -> bool:
    """KVMSIM_PURE=1 (any value but empty or 0): the pure-Python source everywhere."""
    return os.environ.get("KVMSIM_PURE", "") not in ("", "0")


def loaded() -> list[str]:
    """The table modules this process has imported as extension modules (what bench figures ran on)."""
    out = []
    for mod in MODULES:
        m = sys.modules.get(mod)
        if m is not None and str(getattr(m, "__file__", "")).endswith(EXT_SUFFIX):
            out.append(mod)
    return out
