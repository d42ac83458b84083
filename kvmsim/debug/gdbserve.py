"""`kvmsim debug FILE --gdb [HOST:]PORT`: the scenario under the Debugger, served to gdb.

The guest's linked ELF is written next to the session (or where `--elf` says) and its path is
printed with the gdb command line that attaches, so `gdb guest.elf` finds the guest's symbols.
The vCPU waits, stopped before its first instruction, until gdb connects.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, TextIO

from kvmsim.debug.command import load
from kvmsim.debug.engine import Debugger
from kvmsim.debug.gdbstub import GdbStub, listen, parse_endpoint, serve_forever
from kvmsim.debug.gdbtarget import DebuggerTarget, fallback_command


# REPL commands that move the guest: through `monitor` they would change registers behind gdb's
# register cache, so gdb's own continue/stepi (and `monitor break ...`) do that instead.
MOTIONS = frozenset(("continue", "c", "next", "n", "step", "s", "stepi", "si", "finish", "until", "run",
                     "restart", "quit", "q", "EOF"))


def add_gdb_arguments(parser: argparse.ArgumentParser) -> None:
    """`kvmsim debug`'s gdb options; with --gdb the command serves gdb instead of the prompt."""
    parser.add_argument("--gdb", metavar="[HOST:]PORT",
                        help="serve the guest vCPU to gdb over the GDB remote protocol (host 127.0.0.1 "
                             "unless given; port 0 picks a free one)")
    parser.add_argument("--elf", metavar="OUT", help="with --gdb: write the guest ELF (symbols) here "
                                                     "(default: a temporary directory; the path is printed)")
    shell = parser.get_default("func")

    def run(args: argparse.Namespace) -> int:
        if args.gdb is None:
            return shell(args)
        try:
            parse_endpoint(args.gdb)
        except ValueError:
            print(f"kvmsim debug: --gdb wants [HOST:]PORT, not {args.gdb!r}", file=sys.stderr)
            return 2
        return serve_scenario(load(args), args.gdb, sys.stdout, elf=args.elf, command=repl_command)
    parser.set_defaults(func=run)


def repl_command(dbg: Debugger) -> Callable[[str], str]:
    """`monitor LINE`: the REPL's command LINE, its output captured for gdb's console; `exit` shows
    the current exit (the REPL's `exit` would end the session: gdb's `kill` does that)."""
    from kvmsim.debug.repl import DebugShell   # here, not at the top: `kvmsim --help` imports this module

    def run(line: str) -> str:
        word = line.split()[0] if line.split() else ""
        if word == "exit":
            return fallback_command(dbg, line)
        if word in MOTIONS:
            return (f"error: `{word}` moves the guest behind gdb's back; use gdb's continue/stepi, and "
                    f"`monitor break ...` to stop at exits, stages or kernel functions")
        buf = io.StringIO()
        DebugShell(dbg, stdout=buf).onecmd(line)
        return buf.getvalue()
    return run


def serve_scenario(scenario: Any, endpoint: str, out: TextIO, elf: str | None = None,
                   command: Callable[[Debugger], Callable[[str], str]] | None = None) -> int:
    """Serve one scenario to gdb until gdb detaches or kills it; returns the CLI exit status.

    `command(dbg)` gives the `monitor` interpreter (the REPL's command loop when there is one)."""
    # here, not at the top: `kvmsim --help` imports this module; the runner loads the whole KVM model
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
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"kvmsim debug: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
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
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)    # the ELF we made; gdb has read it by now
    return 0
