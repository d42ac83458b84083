"""`kvmsim debug`: its arguments and what it does (cli.py only registers it)."""

from __future__ import annotations

import argparse
from typing import Any

from kvmsim.debug.engine import Debugger
from kvmsim.errors import ScenarioError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    d = sub.add_parser("debug", help="step through a scenario's exits: breakpoints on exits, kernel stages, guest code")
    d.add_argument("file", nargs="?", metavar="FILE", help="a scenario YAML file")
    d.add_argument("--guest", metavar="FILE.S", help="debug a guest source with default devices")
    d.add_argument("--mode", choices=("real16", "prot32", "long64"), help="vCPU mode for --guest")
    d.add_argument("-x", dest="script", metavar="COMMANDS", help="run the debugger commands in this file first")
    d.add_argument("--batch", action="store_true", help="exit when the -x script ends (no prompt)")
    d.set_defaults(func=cmd_debug)
    return d


def load(args: argparse.Namespace) -> Any:
    """The scenario the arguments name (same rules as `kvmsim run`)."""
    # here, not at the top: `kvmsim --help` imports this module, and scenario/ loads pydantic
    from kvmsim.scenario.loader import load_scenario, quick_scenario

    if args.guest and args.file:
        raise ScenarioError(None, None, "debug: give a scenario file or --guest FILE.S, not both")
    if args.mode and not args.guest:
        raise ScenarioError(None, None, "debug: --mode applies only to --guest FILE.S")
    if args.guest:
        return quick_scenario(args.guest, args.mode)
    if not args.file:
        raise ScenarioError(None, None, "debug needs a scenario file, or --guest FILE.S --mode MODE")
    return load_scenario(args.file)


def cmd_debug(args: argparse.Namespace) -> int:
    from kvmsim.debug.repl import run_shell   # here, not at the top: `kvmsim --help` imports this module

    if args.batch and not args.script:
        raise ScenarioError(None, None, "debug: --batch goes with -x COMMANDS")
    dbg = Debugger(load(args))
    return run_shell(dbg, args.script, args.batch)
