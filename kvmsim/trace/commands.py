"""`kvmsim trace` and `kvmsim stacks`: argument parsing and output (cli.py registers them).

    kvmsim trace FILE [-e EVENT]... [--filter EXPR] [--backend sim|kvm]
    kvmsim stacks FILE... --func NAME [--folded] [--svg OUT.svg]
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from kvmsim.errors import ScenarioError
from kvmsim.probe import PROBES, kfunc_names
from kvmsim.trace import stacks
from kvmsim.trace.clock import VirtualClock
from kvmsim.trace.flamegraph import render_svg

EXIT_OK, EXIT_INPUT, EXIT_INTERNAL = 0, 2, 3
PVM_NOTE = ("# host kvm_pvm: a paravirtual KVM; every CPL0 guest instruction goes through its emulator "
            "(kvm_emulate_insn) and it emits no kvm_entry/kvm_exit")


def add_parsers(sub: Any, load_all: Callable) -> dict[str, argparse.ArgumentParser]:
    """Register both commands on cli.py's subparsers; returns them so others can add flags."""
    t = sub.add_parser("trace", help="kvm tracepoints of a run, as `trace-cmd report` prints them")
    t.add_argument("files", nargs="+", metavar="FILE", help="scenario YAML files or directories")
    t.add_argument("-e", "--event", action="append", metavar="EVENT",
                   help="only this event (repeatable; globs such as 'kvm_*'; 'kvm:' prefix allowed)")
    t.add_argument("--filter", metavar="EXPR",
                   help="ftrace filter on the event's fields, e.g. 'port == 0x3f8 && rw == 1'")
    t.add_argument("--backend", choices=("sim", "kvm"), default="sim",
                   help="kvm: the real host's tracepoints (tracefs) for the same scenario")
    t.add_argument("--jsonl", metavar="OUT", help="also write every probe event (calls, returns, tracepoints) "
                   "as JSON Lines, on the same virtual clock (sim; schema in the README)")
    t.set_defaults(func=lambda a: cmd_trace(a, load_all))

    s = sub.add_parser("stacks", help="bpftrace-style stack histograms of a modelled kernel function")
    s.add_argument("files", nargs="+", metavar="FILE", help="scenario YAML files or directories (summed)")
    s.add_argument("--func", dest="function", required=True, metavar="NAME", help="a modelled kernel function, e.g. x86_emulate_insn")
    s.add_argument("--folded", action="store_true", help="folded stacks (flamegraph.pl, speedscope) instead")
    s.add_argument("--svg", metavar="OUT.svg", help="also write a flame graph to OUT.svg")
    s.set_defaults(func=lambda a: cmd_stacks(a, load_all))
    return {"trace": t, "stacks": s}


def cmd_trace(args: argparse.Namespace, load_all: Callable) -> int:
    # Here, not at the top: cli.py imports this module to build its parser for every command, and
    # these load the kernel model and the runner (unicorn); `kvmsim check` stays light (cli.py's rule).
    from kvmsim.scenario.runner import kvm_probe
    from kvmsim.trace.capture import capture_kvm, stream_sim
    from kvmsim.trace.events import JsonlSession, RunInfo
    from kvmsim.trace.filter import EventFilter
    from kvmsim.trace.report import format_line

    keep = EventFilter(args.event, args.filter)
    jsonl = _open_jsonl(args)
    scenarios, status = load_all(args.files)
    if args.backend == "kvm":
        ok, why = kvm_probe()
        if not ok:
            print(f"kvmsim: trace: the kvm backend is not available here: {why}", file=sys.stderr)
            return EXIT_INTERNAL
    print("cpus=1")
    for sc in scenarios:
        if args.backend not in sc.backends:
            print(f"# {sc.name}: not run (backends: {', '.join(sc.backends)})")
            continue
        if len(scenarios) > 1:
            print(f"# scenario {sc.name}")
        if args.backend == "kvm":
            cap = capture_kvm(sc)
            if cap.unavailable:
                print(f"kvmsim: trace: host tracepoints unavailable: {cap.unavailable}", file=sys.stderr)
                return EXIT_INTERNAL
            if cap.module == "kvm_pvm":
                print(PVM_NOTE)
        else:   # streamed: a million-exit run prints as it goes, in bounded memory
            def show(line: Any) -> None:
                if keep(line.event, line.fields):
                    print(format_line(line))
            if jsonl is None:
                stream_sim(sc, show)
            else:
                with JsonlSession(jsonl, RunInfo(sc.name, str(sc.path) if sc.path else None), VirtualClock().stamp,
                                  JSONL_CLOCK) as session:
                    res = stream_sim(sc, show)
                session.end(res)
            continue
        for line in cap.lines:
            if keep(line.event, line.fields):
                print(format_line(line))
    return status


JSONL_CLOCK = ("virtual ns: retired guest instructions x 1000, the ns ordering events at one count "
               "(trace/clock.py, not measured), as the trace lines")


def _open_jsonl(args: argparse.Namespace) -> Any:
    """--jsonl OUT for kvmsim trace (sim only: the host's tracefs has no modelled call stack)."""
    if not getattr(args, "jsonl", None):
        return None
    if args.backend != "sim":
        raise ScenarioError(args.jsonl, None, "--jsonl: the sim backend only (the host's tracefs has "
                            "tracepoints, not the modelled kernel calls)")
    try:
        return open(args.jsonl, "w", encoding="utf-8")   # noqa: SIM115 - lives for the whole command
    except OSError as e:
        raise ScenarioError(args.jsonl, None, f"--jsonl: cannot write: {e.strerror}") from None


def modelled_functions() -> set[str]:
    """Every @kfunc of the kernel model (imports each kvmsim.kvm module once)."""
    import kvmsim.kvm   # the whole kernel model, on purpose, and only for `stacks` (see cmd_trace)
    for mod in pkgutil.walk_packages(kvmsim.kvm.__path__, "kvmsim.kvm."):
        importlib.import_module(mod.name)
    return kfunc_names()


def cmd_stacks(args: argparse.Namespace, load_all: Callable) -> int:
    from kvmsim.scenario.runner import run_scenario   # the runner loads when the command runs (see cmd_trace)

    known = modelled_functions()
    if args.function not in known:
        raise ScenarioError("--func", None, f"{args.function!r} is not a modelled kernel function; "
                                            f"modelled: {', '.join(sorted(known))}")
    scenarios, status = load_all(args.files)
    hist: Counter = Counter()
    for sc in scenarios:
        if "sim" in sc.backends:
            counter = stacks.StackCounter(args.function)
            PROBES.subscribe(counter)
            try:
                run_scenario(sc, backend="sim")
            finally:
                PROBES.unsubscribe(counter)
            hist += counter.hist
    if args.svg:
        Path(args.svg).write_text(render_svg(hist, f"{args.function}: {sum(hist.values())} calls"))
    sys.stdout.write(stacks.format_folded(hist) if args.folded else stacks.format_bpftrace(hist))
    return status
