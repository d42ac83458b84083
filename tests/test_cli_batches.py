"""`kvmsim bench FILES` and `kvmsim emulator-coverage FILES` report every file of a batch on its own:
a file that does not load, does not assemble, or crashes kvmsim is named on stderr, the others
are still measured, and the batch ends with the worst status (2 bad input, 3 a kvmsim bug)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim import cli
from kvmsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "scenarios" / "mmio-read-no-decode.yaml"


def _files(tmp_path: Path) -> dict[str, Path]:
    f = {"unloadable": tmp_path / "a-unloadable.yaml", "no-assemble": tmp_path / "b-no-assemble.yaml",
         "good-copy": tmp_path / "c-good.yaml"}
    f["unloadable"].write_text("name: a\ndescription: b\nguest: {asm: hlt, mode: long99}\n")
    f["no-assemble"].write_text("name: noasm\ndescription: b\nguest: {asm: 'movx %al, %bl', mode: long64}\n")
    f["good-copy"].write_text(GOOD.read_text().replace("name: mmio-read-no-decode", "name: good-copy"))
    return f


@pytest.mark.parametrize("command", [["bench", "--repeat", "1"], ["emulator-coverage"]])
def test_a_bad_file_does_not_stop_the_batch(command: list[str], tmp_path: Path, capsys) -> None:
    f = _files(tmp_path)
    status = main(command + [str(f["unloadable"]), str(f["no-assemble"]), str(GOOD), str(f["good-copy"])])
    out, err = capsys.readouterr()
    assert status == 2
    assert f"{f['unloadable']}:3: error:" in err
    assert f"{f['no-assemble']}:3: error: assembly failed" in err
    if command[0] == "bench":
        assert "mmio-read-no-decode" in out and "good-copy" in out and "noasm" in out
    else:
        assert "NO_DECODE" in out and "mmio-read-no-decode, good-copy" in out


@pytest.mark.parametrize("command", [["bench", "--repeat", "1"], ["emulator-coverage"]])
def test_a_crash_in_one_file_is_status_3_and_the_rest_still_run(command: list[str], tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    from kvmsim.scenario import runner

    real = runner.run_scenario

    def flaky(sc, **kw):
        if sc.name == "good-copy":
            raise RuntimeError("boom")
        return real(sc, **kw)

    monkeypatch.setattr(cli, "_runner", lambda: flaky)
    f = _files(tmp_path)
    status = main(command + [str(f["good-copy"]), str(GOOD)])
    out, err = capsys.readouterr()
    assert status == 3
    assert f"kvmsim: {f['good-copy']}: internal error: RuntimeError: boom" in err
    assert "mmio-read-no-decode" in out


def test_bench_repeat_must_be_positive(capsys) -> None:
    assert main(["bench", "--repeat", "0", str(GOOD)]) == 2
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.kvm
def test_diff_goes_on_after_a_crash_in_one_file(tmp_path: Path, capsys, monkeypatch) -> None:
    from kvmsim.scenario import differential

    real = differential.diff_scenario

    def flaky(sc, module):
        if sc.name == "good-copy":
            raise RuntimeError("boom")
        return real(sc, module)

    monkeypatch.setattr(differential, "diff_scenario", flaky)
    f = _files(tmp_path)
    serial = ROOT / "scenarios" / "serial-hello-long64.yaml"
    status = main(["diff", str(f["good-copy"]), str(serial)])
    out, err = capsys.readouterr()
    assert status == 3
    assert f"kvmsim: {f['good-copy']}: internal error: RuntimeError: boom" in err
    assert "MATCH  serial-hello-long64" in out
