"""`kvmsim debug FILE --gdb [HOST:]PORT`: the scenario under the Debugger, served to gdb.

The guest's linked ELF is written next to the session (or where `--elf` says) and its path is
printed with the gdb command line that attaches, so `gdb guest.elf` finds the guest's symbols.
The vCPU waits, stopped before its first instruction, until gdb connects.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, TextIO

from kvmsim.debug.engine import Debugger
from kvmsim.debug.gdbstub import GdbStub, listen, parse_endpoint, serve_forever
from kvmsim.debug.gdbtarget import DebuggerTarget


def serve_scenario(scenario, endpoint: str, out: TextIO, elf: str | None = None,
                   command: Callable[[Debugger], Callable[[str], str]] | None = None) -> int:
    """Serve one scenario to gdb until gdb detaches or kills it; returns the CLI exit status.

    `command(dbg)` gives the `monitor` interpreter (the REPL's command loop when there is one)."""
    from kvmsim.scenario.runner import build_image

    host, port = parse_endpoint(endpoint)
    tmp = None
    if elf is None:
        tmp = tempfile.mkdtemp(prefix="kvmsim-gdb-")
        elf = os.path.join(tmp, f"{scenario.name}.elf")
    image = build_image(scenario, elf_out=Path(elf))
    dbg = Debugger(scenario, image)
    try:
        server = listen(host, port)
    except OSError as e:
        dbg.close()
        print(f"kvmsim debug: cannot listen on {host}:{port}: {e.strerror or e}", file=out)
        return 2
    target = DebuggerTarget(dbg, command(dbg) if command else None)
    bound = server.getsockname()
    where = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
    print(f"gdb stub for {scenario.name} listening on {where}; the vCPU is stopped at "
          f"{dbg.symbolize(dbg.hw.linear_rip())} ({dbg.mode()} mode)", file=out)
    print(f"guest symbols: {elf}", file=out)
    print(f"attach with:   gdb -ex 'symbol-file {elf}' -ex 'target remote {where}'", file=out, flush=True)
    stub = GdbStub(target, log=lambda msg: print(msg, file=out, flush=True))
    try:
        serve_forever(stub, server)
    finally:
        cur = dbg.current
        if cur is not None and not cur.running:
            print(cur.text, file=out, flush=True)
        dbg.close()
    return 0
