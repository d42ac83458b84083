"""Where the images come from: --kut-dir checks, and the archive's build into the cache (with the
message that says what to install when gcc or make is missing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim import cli
from kvmsim.errors import ScenarioError
from kvmsim.kut import build


def test_kut_dir_must_be_a_built_tree(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no x86/unittests.cfg"):
        build.open_tree(tmp_path)
    (tmp_path / "x86").mkdir()
    (tmp_path / "x86" / "unittests.cfg").write_text("[a]\nfile = a.flat\n")
    with pytest.raises(ScenarioError, match=r"no x86/\*.flat"):
        build.open_tree(tmp_path)
    (tmp_path / "x86" / "a.flat").write_bytes(b"")
    (tmp_path / "config.mak").write_text("HOST=x86_64\nARCH=i386\n")
    assert build.open_tree(tmp_path).arch == "i386"


def test_missing_tools_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    archive = tmp_path / "kvm-unit-tests-abc123.tar.gz"
    archive.write_bytes(b"")
    monkeypatch.setenv("KVMSIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KVMSIM_KUT_ARCHIVE", str(archive))
    monkeypatch.setattr(build.shutil, "which", lambda name: None if name in ("gcc", "make") else "/bin/" + name)
    assert build.archive_commit(archive) == "abc123"
    with pytest.raises(ScenarioError, match="needs gcc, make: install them"):
        build.build_from_archive("x86_64")
    assert cli.main(["kut", "-l"]) == 2
    assert "apt-get install gcc make" in capsys.readouterr().err


def test_no_archive_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("KVMSIM_KUT_ARCHIVE", str(tmp_path / "nothing.tar.gz"))
    assert cli.main(["kut", "-l"]) == 2
    assert "no kvm-unit-tests archive" in capsys.readouterr().err
