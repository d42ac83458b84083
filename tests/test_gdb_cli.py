"""`kvmsim build --elf` and `kvmsim debug --gdb`'s argument errors (no gdb needed)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from kvmsim.cli import main
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import build_image

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests/data/gdb/long64.yaml"


def test_build_writes_the_elf_with_the_image_symbols(tmp_path, capsys):
    out = tmp_path / "guest.elf"
    assert main(["build", str(SCENARIO), "--elf", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x7fELF" and out.read_bytes()[4] == 2      # ELFCLASS64 for long64
    nm = subprocess.run(["nm", str(out)], capture_output=True, text=True, check=True).stdout
    got = {p[2]: int(p[0], 16) for p in (ln.split() for ln in nm.splitlines()) if len(p) == 3}
    image = build_image(load_scenario(SCENARIO))
    for name in ("_start", "pio_out", "after_out"):
        assert got[name] == image.symbols[name]
    assert capsys.readouterr().out.startswith(f"{out}: long64 guest at 0x100000")


def test_debug_gdb_bad_endpoint_is_bad_input(capsys):
    assert main(["debug", str(SCENARIO), "--gdb", "localhost:notaport"]) == 2
    assert "--gdb wants [HOST:]PORT" in capsys.readouterr().err


def test_debug_gdb_port_in_use_is_reported(tmp_path, capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        assert main(["debug", str(SCENARIO), "--gdb", f"127.0.0.1:{port}", "--elf", str(tmp_path / "g.elf")]) == 2
    finally:
        busy.close()
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
