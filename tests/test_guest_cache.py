"""The guest build cache lives in the user's cache directory (XDG) and stays under its size bound,
evicting the least recently used build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmsim.scenario import guest_build
from kvmsim.scenario.guest_build import binutils_available, build_guest, cache_dir

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "guests" / "pio_loop.S"


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KVMSIM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "kvmsim" / "guests"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")      # the spec says: ignore a relative path
    assert cache_dir() == Path.home() / ".cache" / "kvmsim" / "guests"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "kvmsim" / "guests"
    monkeypatch.setenv("KVMSIM_CACHE_DIR", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own" / "guests"


@pytest.mark.skipif(not binutils_available(), reason="needs GNU binutils")
def test_cache_evicts_least_recently_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KVMSIM_CACHE_DIR", str(tmp_path))
    d = tmp_path / "guests"

    def build(n: int) -> str:
        before = set(d.glob("*.json")) if d.exists() else set()
        build_guest(SRC, None, "long64", defines={"PIO_LOOP_COUNT": n})
        (new,) = set(d.glob("*.json")) - before
        return new.stem

    a = build(1)
    entry = sum(f.stat().st_size for f in d.iterdir())
    monkeypatch.setenv("KVMSIM_CACHE_MAX_BYTES", str(entry * 5 // 2))   # room for two builds
    b = build(2)
    os.utime(d / f"{a}.json", (1, 1))
    os.utime(d / f"{b}.json", (2, 2))
    monkeypatch.setattr(guest_build, "_build", lambda *a, **k: pytest.fail("cache miss"))
    build_guest(SRC, None, "long64", defines={"PIO_LOOP_COUNT": 1})   # a hit: `a` is now the newest
    monkeypatch.undo()
    monkeypatch.setenv("KVMSIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KVMSIM_CACHE_MAX_BYTES", str(entry * 5 // 2))
    c = build(3)
    left = {f.stem for f in d.glob("*.json")}
    assert left == {a, c}, "b was the least recently used"
    assert {f.stem for f in d.glob("*.bin")} == {a, c}
    assert sum(f.stat().st_size for f in d.iterdir()) <= entry * 5 // 2
