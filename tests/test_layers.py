"""The layer diagram, enforced: every import in kvmsim/ goes down it, never up, and never round in a cycle.

The diagram is data here (LAYERS), so changing the architecture means changing this test on
purpose.  An import may go to a lower layer, or to a module of its own layer as long as the
layer's import graph stays acyclic.  Headers (the uapi ABI, the error types, the probe
mechanism) are below everything and import nothing of kvmsim's.  The userspace VMM sees KVM
only through the ABI, as a process sees /dev/kvm.  trace/ and debug/ observe: nothing below
them imports them.  An import inside a function, or below the first statement of a module,
needs a comment on its line or the lines just above saying why it cannot sit at the top.
`if TYPE_CHECKING:` imports count for direction, not for cycles (they never execute).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (layer, rank, module prefixes).  Higher ranks may import lower ranks; equal ranks only
# within the same layer.  The longest matching prefix decides a module's layer.
LAYERS: list[tuple[str, int, tuple[str, ...]]] = [
    ("header", 0, ("kvmsim.uapi", "kvmsim.errors", "kvmsim.probe")),
    # Which file an import of a hot module loads (the compiled path's table and import guard): the
    # package root installs the guard before anything else, so it sits below everything.
    ("compiled", 0, ("kvmsim.compiled", "kvmsim.compiled.guard")),
    ("hw", 1, ("kvmsim.hw",)),
    ("kvm", 2, ("kvmsim.kvm",)),
    ("realkvm", 2, ("kvmsim.realkvm",)),       # the same ABI backed by /dev/kvm: a peer of kvm/
    ("api", 3, ("kvmsim", "kvmsim.api")),   # "kvmsim": the package root re-exports the API
    ("vmm", 4, ("kvmsim.vmm",)),
    ("scenario", 5, ("kvmsim.scenario",)),
    ("trace", 6, ("kvmsim.trace",)),
    ("debug", 7, ("kvmsim.debug",)),
    ("tools", 8, ("kvmsim.report", "kvmsim.bench", "kvmsim.baseline", "kvmsim.fuzz", "kvmsim.kut",
                  "kvmsim.compiled.build", "kvmsim.compiled.__main__")),
    ("cli", 9, ("kvmsim.cli", "kvmsim.__main__")),
    # `make fuzz-scenarios` drives the command line itself (cli.main on each mutant, in-process), as a
    # shell would: a client of the CLI, so above it.
    ("cli-clients", 10, ("kvmsim.fuzz.scenarios",)),
]

# Userspace reaches KVM through the ABI only: these layers may not import those, whatever the ranks say.
FORBIDDEN: dict[str, set[str]] = {
    "vmm": {"hw", "kvm", "realkvm"},
}

@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    path: str
    line: int
    typing_only: bool
    placed: str          # "top", "late" (below the first statement) or "local" (inside a function)
    explained: bool      # a comment on the line or just above it


def layer_of(module: str) -> tuple[str, int]:
    best = ("", -1, 0)
    for name, rank, prefixes in LAYERS:
        for p in prefixes:
            nested = "." in p and module.startswith(p + ".")     # a bare "kvmsim" names the root module only
            if (module == p or nested) and len(p) > best[2]:
                best = (name, rank, len(p))
    if best[1] < 0:
        raise AssertionError(f"{module} is in no layer of the diagram")
    return best[0], best[1]


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted((root / "kvmsim").rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _explained(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or on the comment lines just above it (through a block of imports)."""
    if "#" in lines[lineno - 1]:
        return True
    i = lineno - 2
    while i >= 0:
        s = lines[i].strip()
        if s.startswith("#"):
            return True
        if not s.startswith(("import ", "from ")):
            return False
        i -= 1
    return False


def _targets(module: str, path: Path, node: ast.AST, mods: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("kvmsim")]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not base.startswith("kvmsim"):
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]


def import_edges(root: Path) -> list[Edge]:
    mods = _modules(root)
    edges: list[Edge] = []
    for module, path in mods.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        placement: dict[int, tuple[str, bool]] = {}
        seen_code = False
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                placement[id(stmt)] = ("late" if seen_code else "top", False)
            elif isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                for sub in ast.walk(stmt):
                    placement[id(sub)] = ("top", True)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue                                  # the docstring
            elif isinstance(stmt, ast.Try) and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in stmt.body):
                continue                                  # an optional-import block
            else:
                seen_code = True
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            placed, typing_only = placement.get(id(node), ("local", False))
            for dst in _targets(module, path, node, mods):
                if dst != module:
                    edges.append(Edge(module, dst, str(path.relative_to(root)), node.lineno, typing_only,
                                      placed, _explained(lines, node.lineno)))
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(root: Path) -> set[str]:
    found: set[str] = set()
    graph: dict[str, set[str]] = {}
    for e in import_edges(root):
        (sl, sr), (dl, dr) = layer_of(e.src), layer_of(e.dst)
        if dr > sr or (dr == sr and sl != dl) or dl in FORBIDDEN.get(sl, ()):
            found.add(f"up: {e.src} -> {e.dst} ({sl} -> {dl})")
        if sl == "header" and dl == "header" and e.src != e.dst and not e.typing_only:
            found.add(f"header imports: {e.src} -> {e.dst}")
        if e.placed != "top" and not e.explained:
            found.add(f"{e.placed} import without a why: {e.path}: {e.dst}")
        if sl == dl and not e.typing_only:
            graph.setdefault(e.src, set()).add(e.dst)
    for comp in _cycles(graph):
        found.add("cycle: " + " ".join(comp))
    return found


def test_every_import_goes_down_the_diagram() -> None:
    found = sorted(violations(ROOT))
    assert not found, "imports against the layer diagram:\n  " + "\n  ".join(found)


def test_every_module_has_a_layer() -> None:
    for module in _modules(ROOT):
        layer_of(module)


# ------------------------------------------------------------ the checker itself, on a tree made up here

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, body in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(body))
    for d in {p.parent for p in tmp_path.rglob("*.py")}:
        (d / "__init__.py").touch()
    return tmp_path


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"kvmsim/hw/cpu.py": "from kvmsim.kvm.x86 import run\n",
                            "kvmsim/kvm/x86.py": "from kvmsim.hw.cpu import Cpu\n"})
    assert violations(root) == {"up: kvmsim.hw.cpu -> kvmsim.kvm.x86 (hw -> kvm)"}


def test_a_cycle_inside_a_layer_is_caught_even_through_a_function(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"kvmsim/kvm/x86.py": "from kvmsim.kvm import vmx\n",
                            "kvmsim/kvm/vmx.py": "def f():\n    # why: a test\n    from kvmsim.kvm import x86\n"})
    assert violations(root) == {"cycle: kvmsim.kvm.vmx kvmsim.kvm.x86"}


def test_a_typing_only_import_makes_no_cycle(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"kvmsim/kvm/x86.py": "from kvmsim.kvm import vmx\n",
                            "kvmsim/kvm/vmx.py": "from typing import TYPE_CHECKING\n"
                                                 "if TYPE_CHECKING:\n    from kvmsim.kvm.x86 import Vcpu\n"})
    assert violations(root) == set()


def test_userspace_sees_kvm_only_through_the_abi(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"kvmsim/vmm/runloop.py": "from kvmsim.kvm.x86 import run\nfrom kvmsim.uapi import KvmRun\n",
                            "kvmsim/kvm/x86.py": "", "kvmsim/uapi.py": ""})
    assert violations(root) == {"up: kvmsim.vmm.runloop -> kvmsim.kvm.x86 (vmm -> kvm)"}


def test_imports_out_of_place_need_a_reason(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"kvmsim/kvm/x86.py": "X = 1\nfrom kvmsim.hw import cpu\n",
                            "kvmsim/kvm/mmu.py": "def f():\n    from kvmsim.hw import cpu\n",
                            "kvmsim/kvm/pio.py": "def f():\n    from kvmsim.hw import cpu  # only on the slow path\n",
                            "kvmsim/hw/cpu.py": ""})
    assert violations(root) == {"late import without a why: kvmsim/kvm/x86.py: kvmsim.hw.cpu",
                                "local import without a why: kvmsim/kvm/mmu.py: kvmsim.hw.cpu"}


@pytest.mark.parametrize("module,layer", [("kvmsim.kvm.emulate.decode", "kvm"), ("kvmsim.uapi", "header"),
                                          ("kvmsim.cli", "cli"), ("kvmsim", "api"), ("kvmsim.vmm.devices.serial", "vmm")])
def test_layer_of(module: str, layer: str) -> None:
    assert layer_of(module)[0] == layer
