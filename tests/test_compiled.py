"""The compiled exit path (kvmsim/compiled/): the pure source gives the same results, an extension
module never shadows a source edited after the build, and a missing toolchain is one notice line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmsim import compiled
from kvmsim.compiled import build

REPO = Path(__file__).resolve().parents[1]

# A mixed workload and the emulator's heavy users: string MMIO, real-to-long mode switches, ALU on
# memory, a task switch; each run's whole result, trace included (wall time aside).
SCENARIOS = ("census", "rep-movs-mmio-long64", "mode-switch-real-to-long", "emulator-alu-long64", "task-switch")

RUN = """
import json, sys
from kvmsim import compiled
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import run_scenario
from kvmsim.trace.recorder import Recorder
runs = {}
for path in sys.argv[1:]:
    doc = json.loads(run_scenario(load_scenario(path), trace=Recorder()).to_json())
    doc.pop("wall_seconds")
    runs[path] = doc
print(json.dumps({"loaded": compiled.loaded(), "runs": runs}, sort_keys=True))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KVMSIM_PURE", "KVMSIM_COMPILED_WARNED")}
    env.update(extra)
    return env


def _python(code: str, *args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=120)


def test_pure_source_and_compiled_modules_give_the_same_results_byte_for_byte():
    if any(s.state != "compiled" for s in compiled.check()):
        pytest.skip("compiled modules not built or not current (python -m kvmsim.compiled build)")
    paths = [str(REPO / "scenarios" / f"{n}.yaml") for n in SCENARIOS]
    fast = _python(RUN, *paths)
    pure = _python(RUN, *paths, KVMSIM_PURE="1")
    assert fast.returncode == 0 and pure.returncode == 0, fast.stderr + pure.stderr
    assert fast.stderr == pure.stderr == ""
    fast_doc, pure_doc = json.loads(fast.stdout), json.loads(pure.stdout)
    assert pure_doc["loaded"] == []
    assert {"kvmsim.kvm.emulate.emulate", "kvmsim.kvm.emulate.decode", "kvmsim.kvm.x86_emulate",
            "kvmsim.hw.cpu"} <= set(fast_doc["loaded"])
    assert all(len(pure_doc["runs"][p]["trace"]) > 20 for p in paths)
    rep = fast_doc["runs"][paths[1]]["trace"]     # compiled kfuncs are in the call graph (probe._rebind swaps them)
    assert any(ln.strip().startswith("kvm_mmu_page_fault(cr2_or_gpa=0xd") for ln in rep)   # with its arguments
    assert any(ln.strip().startswith("x86_emulate_instruction(emulation_type=") for ln in rep)
    assert json.dumps(fast_doc["runs"], sort_keys=True) == json.dumps(pure_doc["runs"], sort_keys=True)


IMPORT = ("import kvmsim.kvm.emulate.decode as d, kvmsim.hw.cpu as c, kvmsim.kvm.x86 as x; "
          "print(d.__file__, c.__file__, x.__file__)")
BUILD = "from kvmsim.compiled.build import write_manifest; write_manifest('test')"


@pytest.fixture()
def fake_build(tmp_path: Path) -> Path:
    """A copy of the package whose every table module has an "extension" beside its .py that is not
    loadable (garbage bytes: importing one fails loudly) and a manifest that vouches for all of them."""
    shutil.copytree(REPO / "kvmsim", tmp_path / "kvmsim",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "manifest.json"))
    for mod in compiled.MODULES:
        (tmp_path / compiled.rel_path(mod, compiled.EXT_SUFFIX)).write_bytes(b"not an ELF file")
    assert _python(BUILD, cwd=tmp_path).returncode == 0
    return tmp_path


def test_a_current_build_loads_its_extensions(fake_build: Path):
    """The control: with the manifest matching, the (garbage) extension is what Python loads."""
    r = _python(IMPORT, cwd=fake_build)
    assert r.returncode != 0 and "ImportError" in r.stderr and compiled.EXT_SUFFIX + ": file too short" in r.stderr


def test_a_source_edited_after_the_build_loads_instead_with_one_warning(fake_build: Path):
    with open(fake_build / "kvmsim/kvm/emulate/decode.py", "a") as f:
        f.write("\n# edited after the build\n")
    r = _python(IMPORT, cwd=fake_build)
    assert r.returncode == 0, r.stderr
    files = r.stdout.split()
    assert files == [str(fake_build / p)
                     for p in ("kvmsim/kvm/emulate/decode.py", "kvmsim/hw/cpu.py", "kvmsim/kvm/x86.py")]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "kvm/emulate/decode.py changed since the build" in lines[0]
    assert "python -m kvmsim.compiled build" in lines[0]
    st = _python("from kvmsim.compiled.build import status; status()", cwd=fake_build)
    assert any(ln.split()[:2] == ["kvmsim.kvm.emulate.decode", "stale"] for ln in st.stdout.splitlines())
    assert st.stdout.splitlines()[-1].startswith("pure Python: 1 of")


def test_a_pxd_edited_after_the_build_is_stale_too(fake_build: Path):
    (fake_build / "kvmsim/hw/memory.pxd").write_text("# types for memory.py\n")
    r = _python(IMPORT, cwd=fake_build)
    assert r.returncode == 0 and r.stdout.split()[1].endswith("cpu.py")
    assert "kvmsim/hw/memory.pxd changed since the build" in r.stderr


def test_kvmsim_pure_loads_the_source_silently(fake_build: Path):
    r = _python(IMPORT, cwd=fake_build, KVMSIM_PURE="1")
    assert r.returncode == 0 and all(p.endswith(".py") for p in r.stdout.split()) and r.stderr == ""


def test_an_extension_the_build_did_not_make_never_loads(fake_build: Path):
    """kvm/msr.py is not in the table: a stray msr.*.so (a hand-run cythonize) is not in the
    manifest, so its source loads; here with nothing else built."""
    for mod in compiled.MODULES:
        (fake_build / compiled.rel_path(mod, compiled.EXT_SUFFIX)).unlink()
    (fake_build / "kvmsim/compiled/manifest.json").unlink()
    assert "kvmsim.kvm.msr" not in compiled.MODULES
    (fake_build / compiled.rel_path("kvmsim.kvm.msr", compiled.EXT_SUFFIX)).write_bytes(b"stray")
    r = _python("import kvmsim.kvm.msr as x; print(x.__file__)", cwd=fake_build)
    assert r.returncode == 0 and r.stdout.strip().endswith("kvm/msr.py")
    assert "is not from the build" in r.stderr and len(r.stderr.splitlines()) == 1


def test_child_processes_do_not_repeat_the_warning(fake_build: Path):
    (fake_build / "kvmsim/kvm/mmu.py").write_text((fake_build / "kvmsim/kvm/mmu.py").read_text() + "\n")
    code = ("import subprocess, sys; import kvmsim.kvm.mmu; "
            "subprocess.run([sys.executable, '-c', 'import kvmsim.kvm.mmu'], check=True)")
    r = _python(code, cwd=fake_build)
    assert r.returncode == 0 and len(r.stderr.splitlines()) == 1 and "mmu.py changed" in r.stderr


@pytest.mark.parametrize("missing", ["compiler", "headers"])
def test_no_toolchain_is_one_notice_line_and_nothing_changes(missing, monkeypatch, capsys, tmp_path):
    if missing == "compiler":
        monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    else:
        monkeypatch.setattr(build.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    before = {m: compiled.so_stamp(m) for m in compiled.MODULES}, compiled.read_manifest()
    assert build.build() == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "not built" in err[0] and "pure-Python source" in err[0]
    assert ("C compiler" if missing == "compiler" else "Python headers") in err[0]
    assert ({m: compiled.so_stamp(m) for m in compiled.MODULES}, compiled.read_manifest()) == before


def test_clean_removes_the_extensions_and_the_manifest(fake_build: Path, tmp_path: Path):
    r = subprocess.run([sys.executable, "-m", "kvmsim.compiled", "clean"], cwd=fake_build, capture_output=True,
                       text=True, env=_env(KVMSIM_CACHE_DIR=str(tmp_path / "cache")), timeout=60)
    assert r.returncode == 0 and f"{len(compiled.MODULES)} removed" in r.stderr
    assert not list((fake_build / "kvmsim").rglob("*.so"))
    assert not (fake_build / "kvmsim/compiled/manifest.json").exists()
    st = _python("from kvmsim.compiled.build import status; status()", cwd=fake_build)
    assert st.stdout.splitlines()[-1].startswith("pure Python: nothing built")
    assert _python(IMPORT, cwd=fake_build).stderr == ""
