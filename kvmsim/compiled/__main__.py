"""python -m kvmsim.compiled build [--force] [-j N] [--quiet] | status | clean"""

from __future__ import annotations

import argparse
import sys

from kvmsim.compiled.build import build, clean, status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kvmsim.compiled",
                                 description="The compiled exit path: build it, show its state, remove it.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile the hot modules with Cython (only what is out of date)")
    b.add_argument("--force", action="store_true", help="regenerate and recompile every module")
    b.add_argument("-j", "--jobs", type=int, default=2, help="parallel compiles (default 2)")
    b.add_argument("--quiet", action="store_true", help="print only when something was built or went wrong")
    sub.add_parser("status", help="each module: compiled, stale or pure; and what a new process runs")
    sub.add_parser("clean", help="remove the extension modules, the manifest and the cached C")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        return build(jobs=max(1, args.jobs), force=args.force, quiet=args.quiet)
    return status() if args.cmd == "status" else clean()


if __name__ == "__main__":
    sys.exit(main())
