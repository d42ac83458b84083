"""kvmsim command line: parse arguments and dispatch; the layout lives in report.py.

Exit status (README table): 0 ok, 1 an expectation (or a sim/kvm diff) failed or a guest with
no `expect.stop` did not stop normally, 2 bad input (ScenarioError, usage), 3 internal error /
backend unavailable, 141 stdout closed early.  No traceback is shown unless KVMSIM_DEBUG=1.

Each command imports what it uses when it runs (the lines marked "per command"): `kvmsim --help`
takes ~0.13 s, and the scenario schema (pydantic), the report (rich), the runner and kvm/ (the
whole model) would each add about as much again; even the light ones (result, trace feed/stat,
the realkvm backend) add ~20 ms together.  The parser's own pieces (debug, trace) are at the top.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

from kvmsim.debug.command import add_parser as add_debug_parser
from kvmsim.debug.gdbserve import add_gdb_arguments
from kvmsim.errors import BackendError, KvmSimBug, ScenarioError
from kvmsim.trace.commands import add_parsers as add_trace_parsers   # trace, stacks
from kvmsim.vmm.limits import LIMIT_FLAGS

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_SIGPIPE = 128 + 13  # stdout closed early (`kvmsim run X | head -1`): quiet, as a shell reports SIGPIPE
DEFAULT_DIR = "scenarios"


# ---------------------------------------------------------------- helpers

def _runner() -> Callable:
    """run_scenario, imported when a command needs it (keeps `kvmsim check/schema` light)."""
    # per command, not at the top: startup (module docstring)
    from kvmsim.scenario.runner import run_scenario
    return run_scenario


def _recorder() -> Any:
    """A trace.recorder.Recorder for `run --trace`, imported only then (as _runner)."""
    from kvmsim.trace.recorder import Recorder  # only `run --trace` needs the trace layer
    return Recorder()


def _console() -> Any:
    """report's console, but a closed stdout raises BrokenPipeError (main exits quietly) instead of
    rich's own SystemExit(1), which would read as a failed expectation."""
    # per command, not at the top: startup (module docstring)
    from kvmsim import report
    con = report.make_console()

    def broken_pipe() -> None:
        con.quiet = True
        raise BrokenPipeError
    con.on_broken_pipe = broken_pipe
    return con


def _err(err: BaseException) -> None:
    # per command, not at the top: startup (module docstring)
    from kvmsim.scenario.loader import format_error
    print(format_error(err), file=sys.stderr)


def _load_all(files: list[str]) -> tuple[list[Any], int]:
    """Scenarios that load, and EXIT_INPUT if any did not (each error already printed)."""
    # per command, not at the top: startup (module docstring)
    from kvmsim.scenario.loader import load_scenario, scenario_files
    paths = scenario_files(files)
    if not paths:
        raise ScenarioError(", ".join(files), None, "no scenario files (*.yaml) found")
    out, status = [], EXIT_OK
    for p in paths:
        try:
            out.append(load_scenario(p))
        except ScenarioError as e:
            _err(e)
            status = EXIT_INPUT
    return out, status


def _limit_value(name: str) -> Callable[[str], Any]:
    """argparse type for a limit flag: the scenario schema's own check (finite, positive, bounded)."""
    def parse(text: str) -> Any:
        if name == "max_guest_insns" and text == "off":
            return "off"            # not counted: native speed
        # per command, not at the top: startup (module docstring)
        from pydantic import ValidationError
        from kvmsim.scenario.schema import Limits
        try:
            return getattr(Limits.model_validate({name: text}), name)
        except ValidationError as e:
            raise argparse.ArgumentTypeError(f"{e.errors()[0]['msg']} (got {text!r})") from None
    return parse


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-insns", dest="max_guest_insns", type=_limit_value("max_guest_insns"), metavar="N",
                   help="stop after N retired guest instructions (sim; overrides limits.max_guest_insns; "
                        "'off': not counted, native speed)")
    p.add_argument("--max-exits", dest="max_exits", type=_limit_value("max_exits"), metavar="N",
                   help="stop after N exits to userspace (overrides limits.max_exits)")
    p.add_argument("--timeout", dest="wall_seconds", type=_limit_value("wall_seconds"), metavar="SECONDS",
                   help="stop after SECONDS of wall time (overrides limits.wall_seconds)")


def _apply_limit_flags(scenarios: list[Any], args: argparse.Namespace) -> None:
    """The flags given on the command line replace those limits in every scenario."""
    update = {k: getattr(args, k) for k in LIMIT_FLAGS if getattr(args, k, None) is not None}
    if update.get("max_guest_insns") == "off":
        update["max_guest_insns"] = None
    if update:
        for sc in scenarios:
            sc.limits = sc.limits.model_copy(update=update)


SERIAL_JSON_MAX = 1 << 20   # serial characters in --json output; the rest is in --serial-out FILE


def _bounded_serial(doc: dict[str, Any]) -> dict[str, Any]:
    """Long serial output in --json: its first and last half MiB, with serial_omitted saying how much
    is missing between them (the report bounds it likewise; --serial-out has all of it)."""
    text = doc.get("serial") or ""
    if len(text) > SERIAL_JSON_MAX:
        half = SERIAL_JSON_MAX // 2
        doc["serial"] = text[:half] + text[-half:]
        doc["serial_omitted"] = {"at": half, "chars": len(text) - 2 * half}
    return doc


def _open_serial_out(path: str | None) -> BinaryIO | None:
    """--serial-out FILE: every run's serial output, whole and in run order ('-' is stdout)."""
    if path is None:
        return None
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")   # noqa: SIM115 - lives for the whole command
    except OSError as e:
        raise ScenarioError(path, None, f"--serial-out: cannot write: {e.strerror}") from None


def _open_exits_jsonl(path: str | None) -> Any:
    """--exits-jsonl FILE: every userspace exit of every run, as JSON Lines (result.ExitStream)."""
    if path is None:
        return None
    # per command, not at the top: startup (module docstring)
    from kvmsim.scenario.result import ExitStream
    try:
        return ExitStream(open(path, "w", encoding="utf-8"))   # noqa: SIM115 - lives for the whole command
    except OSError as e:
        raise ScenarioError(path, None, f"--exits-jsonl: cannot write: {e.strerror}") from None


def _keep_exits(text: str) -> int | None | str:
    """--keep-exits: a count, `all`, or `default` (runner.keep_exits_for)."""
    if text.strip().lower() in ("all", "default"):
        return None if text.strip().lower() == "all" else "default"
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', not {text!r}") from None
    if not 0 <= n <= 1 << 32:
        raise argparse.ArgumentTypeError(f"{n} is out of range (0 to {1 << 32}, or 'all')")
    return n


def _at_least_one(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


# ---------------------------------------------------------------- commands

def _bug_lines(where: str | None, e: BaseException) -> list[str]:
    """A kvmsim bug as two lines: what broke (naming the file) and where to report it."""
    kind = "kvmsim bug" if isinstance(e, KvmSimBug) else "internal error"
    first = str(e) if isinstance(e, KvmSimBug) else (str(e).split("\n") or [""])[0]  # a bug carries vCPU state
    at = f"{where}: " if where else ""
    attach = f"{where} and " if where else ""
    return [f"kvmsim: {at}{kind}: {type(e).__name__}: {first}",
            f"  please report it with {attach}the traceback that KVMSIM_DEBUG=1 prints"]


def _error_doc(path: str | None, name: str | None, status: int, e: BaseException) -> dict[str, Any]:
    """The --json object for a file that has no result (bad input, backend or internal error)."""
    kind = {EXIT_INPUT: "input", EXIT_INTERNAL: "internal"}.get(status, "error")
    if isinstance(e, BackendError):
        kind = "backend"
    line = e.line if isinstance(e, ScenarioError) else None
    msg = e.msg if isinstance(e, ScenarioError) else f"{type(e).__name__}: {e}"
    return {"scenario": name, "file": path, "passed": False, "status": status,
            "error": {"kind": kind, "line": line, "message": msg}}


def _run_one(args: argparse.Namespace, sc: Any, con: Any, serial_out: Any = None,
             exits_out: Any = None) -> tuple[int, dict[str, Any]]:
    """Run and check one scenario: (status, its --json document); prints its human report."""
    # per command, not at the top: startup (module docstring)
    from kvmsim import report
    from kvmsim.scenario.expect import check, check_normal_stop
    from kvmsim.scenario.result import SIM_ONLY  # model facts a real host does not report
    backend = args.backend or "sim"
    path = str(sc.path) if sc.path else None
    if backend not in sc.backends:
        why = f"backend {backend} not in its backends {sc.backends}"
        print(f"skipped: {sc.name}: {why}", file=sys.stderr)
        return EXIT_OK, {"scenario": sc.name, "file": path, "passed": None, "skipped": why}
    keep = {} if args.keep_exits == "default" else {"keep_exits": args.keep_exits}
    if exits_out is not None:
        keep["exits_stream"] = exits_out
    result = _runner()(sc, backend=backend, trace=_recorder() if args.trace else None, **keep)
    if serial_out is not None:
        serial_out.write(result.serial.encode("utf-8", "replace"))
        serial_out.flush()
    checks = check(sc, result)
    if sc.expect.stop is None:
        checks.insert(0, check_normal_stop(result))
    unchecked = [c.name for c in checks if backend != "sim" and c.name in SIM_ONLY]
    checks = [c for c in checks if c.name not in unchecked]
    ok = all(c.passed for c in checks)
    if not args.json:
        report.print_run(con, result, checks, trace=args.trace)
        if unchecked:
            report.plain(con, f"not checked on {backend} (model facts the host does not report): "
                         + ", ".join(unchecked), "dim")
    return (EXIT_OK if ok else EXIT_FAIL), {
        "scenario": sc.name, "file": path, "passed": ok, "result": _bounded_serial(result.to_dict()),
        "checks": [c.to_dict() for c in checks], "not_checked": unchecked}


def cmd_run(args: argparse.Namespace) -> int:
    """Each file loaded, run and reported on its own: one that fails never hides the others."""
    # per command, not at the top: startup (module docstring)
    from kvmsim import report
    from kvmsim.scenario.loader import load_scenario, quick_scenario, scenario_files
    if args.guest and args.files:
        raise ScenarioError(None, None, "run: give scenario files or --guest FILE.S, not both")
    if args.mode and not args.guest:
        raise ScenarioError(None, None, "run: --mode applies only to --guest FILE.S (a scenario file "
                            "sets guest.mode)")
    items: list[tuple[str, Callable[[], Any]]]
    if args.guest:
        items = [(args.guest, lambda: quick_scenario(args.guest, args.mode))]
    elif args.files:
        paths = scenario_files(args.files)
        if not paths:
            raise ScenarioError(", ".join(args.files), None, "no scenario files (*.yaml) found")
        items = [(str(p), (lambda p=p: load_scenario(p))) for p in paths]
    else:
        raise ScenarioError(None, None, "run needs scenario files, or --guest FILE.S --mode MODE")
    con, docs, status = _console(), [], EXIT_OK
    serial_out = _open_serial_out(args.serial_out)
    exits_out = _open_exits_jsonl(getattr(args, "exits_jsonl", None))
    for where, load in items:
        name = None
        try:
            sc = load()
            name = sc.name
            _apply_limit_flags([sc], args)
            st, doc = _run_one(args, sc, con, serial_out, exits_out)
        except BrokenPipeError:
            raise
        except ScenarioError as e:  # bad input, incl. a guest that does not assemble or link
            _err(e)
            st, doc = EXIT_INPUT, _error_doc(where, name, EXIT_INPUT, e)
        except BackendError as e:
            print(f"kvmsim: {name or where}: backend {args.backend or 'sim'}: {e}", file=sys.stderr)
            st, doc = EXIT_INTERNAL, _error_doc(where, name, EXIT_INTERNAL, e)
        except Exception as e:  # noqa: BLE001 - a kvmsim bug in one file must not lose the others
            if os.environ.get("KVMSIM_DEBUG") == "1":
                raise
            print("\n".join(_bug_lines(where, e)), file=sys.stderr)
            st, doc = EXIT_INTERNAL, _error_doc(where, name, EXIT_INTERNAL, e)
        status = max(status, st)
        docs.append(doc)
    if serial_out is not None and serial_out is not sys.stdout.buffer:
        serial_out.close()
    if exits_out is not None:
        exits_out.out.close()
    if args.json:
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2, default=str))
    return status


def cmd_check(args: argparse.Namespace) -> int:
    # per command, not at the top: startup (module docstring)
    from kvmsim.scenario.loader import load_scenario, scenario_files
    paths = scenario_files(args.files or [DEFAULT_DIR])
    if not paths:
        raise ScenarioError(", ".join(args.files or [DEFAULT_DIR]), None, "no scenario files (*.yaml) found")
    # per command, not at the top: startup (module docstring)
    from kvmsim.scenario.runner import preflight
    status = EXIT_OK
    for p in paths:
        try:
            sc = load_scenario(p)
            preflight(sc)  # assembles and links the guest and places its image, as `run` would
            print(f"ok: {sc.name}")
        except ScenarioError as e:
            _err(e)
            status = EXIT_INPUT
    return status


def cmd_list(args: argparse.Namespace) -> int:
    # per command, not at the top: startup (module docstring)
    from kvmsim import report
    from kvmsim.scenario.loader import load_scenario, scenario_files
    d = Path(args.dir)
    if not d.is_dir():
        raise ScenarioError(str(d), None, "no such directory")
    rows, status = [], EXIT_OK
    for p in scenario_files([d]):
        try:
            sc = load_scenario(p)
            rows.append({"file": p.name, "name": sc.name, "mode": sc.guest.mode,
                         "backends": ",".join(sc.backends), "description": sc.description.strip()})
        except ScenarioError as e:
            rows.append({"file": p.name, "error": f"line {e.line}: {e.msg.splitlines()[0]}" if e.line
                         else e.msg.splitlines()[0]})
            status = EXIT_INPUT
    _console().print(report.scenario_table(rows))
    return status


def cmd_schema(args: argparse.Namespace) -> int:
    # per command, not at the top: startup (module docstring)
    from kvmsim.scenario.schema import Scenario
    print(json.dumps(Scenario.model_json_schema(), indent=2))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    """Run each scenario on sim and on /dev/kvm; MATCH, or the first divergence (differential.py)."""
    # per command, not at the top: startup (module docstring)
    from kvmsim import report
    from kvmsim.realkvm.backend import vendor_module
    from kvmsim.scenario.differential import Comparison, diff_scenario
    from kvmsim.scenario.runner import kvm_probe
    from kvmsim.scenario.vendor import table_lines  # here, not at the top: as every command's, loaded by diff only
    if args.vendor_table:
        print("\n".join(table_lines()))
        return EXIT_OK
    scenarios, status = _load_all(args.files or [DEFAULT_DIR])
    _apply_limit_flags(scenarios, args)
    ok, why = kvm_probe()
    if not ok:
        print(f"kvmsim: diff: the kvm backend is not available here: {why}", file=sys.stderr)
        return EXIT_INTERNAL
    module, comparisons = vendor_module(), []
    for sc in scenarios:
        try:
            c = diff_scenario(sc, module)
        except BackendError as e:
            c = Comparison(sc.name, "ERROR", host=module, reason=str(e))
            status = max(status, EXIT_INTERNAL)
        except ScenarioError as e:
            _err(e)
            status = max(status, EXIT_INPUT)
            continue
        except BrokenPipeError:
            raise
        except Exception as e:  # noqa: BLE001 - a kvmsim bug in one file must not lose the others
            if os.environ.get("KVMSIM_DEBUG") == "1":
                raise
            print("\n".join(_bug_lines(str(sc.path) if sc.path else sc.name, e)), file=sys.stderr)
            c = Comparison(sc.name, "ERROR", host=module, reason=f"internal error: {type(e).__name__}: {e}")
            status = max(status, EXIT_INTERNAL)
        comparisons.append(c)
        if c.status == "DIFF":
            status = max(status, EXIT_FAIL)
        print("\n".join(report.diff_lines(c)), flush=True)
    print("\n".join(report.diff_summary(comparisons, module)))
    return status


def _per_file(sc: Any, action: Callable[[Any], Any]) -> tuple[int, Any]:
    """action(sc) for one scenario of a batch: (EXIT_OK, its value), or the file's error reported on
    stderr and (its status, None), so that the batch goes on with the next file."""
    where = str(sc.path) if sc.path else sc.name
    try:
        return EXIT_OK, action(sc)
    except BrokenPipeError:
        raise
    except ScenarioError as e:   # e.g. a guest that does not assemble
        _err(e)
        return EXIT_INPUT, None
    except BackendError as e:
        print(f"kvmsim: {where}: backend sim: {e}", file=sys.stderr)
        return EXIT_INTERNAL, None
    except Exception as e:  # noqa: BLE001 - a kvmsim bug in one file must not lose the others
        if os.environ.get("KVMSIM_DEBUG") == "1":
            raise
        print("\n".join(_bug_lines(where, e)), file=sys.stderr)
        return EXIT_INTERNAL, None


def cmd_emulator_coverage(args: argparse.Namespace) -> int:
    """Per decoder table, entries modelled vs the kernel's; with FILEs, which EMULTYPEs scenarios drive."""
    # per command, not at the top: startup (module docstring)
    from kvmsim import report
    if not args.files:
        # per command, not at the top: startup (module docstring)
        from kvmsim.kvm.emulate.coverage import format_coverage
        print(format_coverage())
        return 0
    scenarios, status = _load_all(args.files)
    run_scenario = _runner()
    total: dict[str, int] = {}
    users: dict[str, list[str]] = {}
    for sc in scenarios:
        if "sim" not in sc.backends:
            continue
        st, res = _per_file(sc, lambda sc: run_scenario(sc, backend="sim"))
        status = max(status, st)
        if res is None:
            continue
        for k, n in res.emulation.items():
            if n:
                total[k] = total.get(k, 0) + n
                users.setdefault(k, []).append(sc.name)
    rows = [[k, n, len(users[k]), ", ".join(users[k][:4]) + (" ..." if len(users[k]) > 4 else "")]
            for k, n in sorted(total.items(), key=lambda kv: -kv[1])]
    report.make_console().print(report.counts_table(
        "x86_emulate_instruction calls by EMULTYPE", ["emulation type", "calls", "scenarios", "e.g."], rows))
    return status


def cmd_exit_coverage(args: argparse.Namespace) -> int:
    """Per exit reason of kvm_vmx_exit_handlers: its handler, and the scenarios/tests that exercise it;
    with FILEs, the exits each scenario really takes on the sim."""
    # per command, not at the top: startup (module docstring)
    from kvmsim.trace.exit_coverage import format_exit_coverage
    counts: dict[str, dict[str, int]] = {}
    status = 0
    if args.files:
        scenarios, status = _load_all(args.files)
        run_scenario = _runner()
        for sc in scenarios:
            if "sim" not in sc.backends:
                continue
            st, res = _per_file(sc, lambda sc: run_scenario(sc, backend="sim"))
            status = max(status, st)
            if res is not None:
                counts[sc.name] = dict(res.exits)
    print(format_exit_coverage(counts or None))
    return status


def cmd_bench(args: argparse.Namespace) -> int:
    """Throughput figures (kvmsim/bench.py); with FILEs, wall time per scenario (best of --repeat)."""
    # per command, not at the top: startup (module docstring)
    from kvmsim import report
    if not args.files:
        # per command, not at the top: startup (module docstring)
        from kvmsim import bench
        return bench.main(json_out=args.json, rounds=args.rounds, flat=args.flat)
    scenarios, status = _load_all(args.files)
    run_scenario = _runner()
    rows = []
    for sc in scenarios:
        if "sim" not in sc.backends:
            continue
        def timed(sc: Any) -> tuple[float, Any]:
            best, result = float("inf"), None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = run_scenario(sc, backend="sim")
                best = min(best, time.perf_counter() - t0)
            return best, result
        st, got = _per_file(sc, timed)
        status = max(status, st)
        if got is None:
            rows.append([sc.name, "error", "-", "-", "-", "-"])
            continue
        best, result = got
        n_exits = sum(result.exits.values())
        rows.append([sc.name, f"{best * 1000:.1f}", n_exits, result.userspace_count,
                     f"{n_exits / best:,.0f}" if best > 0 else "-", result.guest_insns or "-"])
    report.make_console().print(report.counts_table(
        f"bench (best of {args.repeat})", ["scenario", "ms", "exits", "userspace", "exits/s", "guest insns"], rows))
    return status


def _report_cmd(args: argparse.Namespace, consumer: Any) -> Any:
    """Feed FILEs to a report and to the exports asked for (trace/feed.py)."""
    # per command, not at the top: startup (module docstring)
    from contextlib import ExitStack
    from kvmsim.trace.feed import export_consumers, feed_files
    with ExitStack() as stack:
        consumers = [consumer] + export_consumers(stack, args.jsonl, args.perfetto)
        return feed_files(args.files, consumers)


def cmd_stat(args: argparse.Namespace) -> int:
    """`perf kvm stat report` for scenarios run now or recorded event files (trace/stat.py)."""
    # per command, not at the top: startup (module docstring)
    from kvmsim.trace.stat import KvmStat
    stat = KvmStat(args.event)
    _report_cmd(args, stat)
    print("\n".join(stat.report(args.key)))
    return EXIT_OK


def cmd_census(args: argparse.Namespace) -> int:
    """Who calls the emulator, how, on what, with what result (trace/census.py)."""
    # per command, not at the top: startup (module docstring)
    from kvmsim.trace.census import Census
    census = Census()
    _report_cmd(args, census)
    doc = census.to_dict()
    if args.chart:
        # per command, not at the top: startup (module docstring)
        from kvmsim.trace.export import census_chart, chart_available
        ok, why = chart_available()
        if not ok:
            raise ScenarioError(args.chart, None, f"--chart: {why}")
        if not args.chart.endswith((".svg", ".png")):
            raise ScenarioError(args.chart, None, "--chart: the file name ends in .svg or .png")
        census_chart(doc, args.chart)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print("\n".join(census.report()))
    return EXIT_OK


def _add_export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="scenario YAML files or directories (run on the sim), "
                   "or .jsonl event files written by --jsonl")
    p.add_argument("--jsonl", metavar="OUT", help="also write every probe event as JSON Lines (README schema)")
    p.add_argument("--perfetto", metavar="OUT", help="also write a Chrome/Perfetto trace-event JSON timeline")


def cmd_build(args: argparse.Namespace) -> int:
    """`kvmsim build FILE --elf OUT`: the scenario's guest, linked, with its symbols (for gdb)."""
    # per command, not at the top: startup (module docstring)
    from kvmsim.scenario.loader import load_scenario
    from kvmsim.scenario.runner import build_image

    image = build_image(load_scenario(Path(args.file)), elf_out=Path(args.elf))
    print(f"{args.elf}: {image.mode} guest at {image.load_addr:#x}, entry {image.entry:#x}, "
          f"{len(image.symbols)} symbols")
    return EXIT_OK


def cmd_kut(args: argparse.Namespace) -> int:
    """kvm-unit-tests' x86 tests, run_tests.sh style (kvmsim/kut/run.py)."""
    from kvmsim.kut.run import main as kut_main   # per command, not at the top: startup (module docstring)
    return kut_main(args)


def _kvm_param(text: str) -> tuple[str, bool]:
    """--kvm-param NAME=Y|N: a modelled kvm module parameter (kvmsim/kut/decide.py KVM_PARAM_FILES)."""
    from kvmsim.kut.decide import KVM_PARAM_FILES   # per command, not at the top: startup (module docstring)
    name, _, val = text.partition("=")
    names = sorted(set(KVM_PARAM_FILES.values()))
    if name not in names or val.upper() not in ("Y", "N", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected NAME=Y|N with NAME one of {', '.join(names)}, got {text!r}")
    return name, val.upper() in ("Y", "1")


def _add_kut_parser(sub: Any) -> None:
    k = sub.add_parser("kut", help="run kvm-unit-tests' x86 tests (unittests.cfg), run_tests.sh style")
    k.add_argument("tests", nargs="*", metavar="TEST", help="tests by cfg name (default: all)")
    k.add_argument("--kut-dir", metavar="DIR", help="a built kvm-unit-tests tree (default: build the "
                   "archive in ../shared/kvm-unit-tests or $KVMSIM_KUT_ARCHIVE into the cache)")
    k.add_argument("--arch", choices=("x86_64", "i386"), help="the archive build to use (default x86_64)")
    k.add_argument("--backend", choices=("sim", "kvm"), default="sim")
    k.add_argument("--qemu", choices=("tcg", "kvm"), metavar="ACCEL", help="a reference: run the tests under "
                   "QEMU through kvm-unit-tests' own x86/run with accel=tcg or kvm (kvmsim/kut/qemu.py)")
    k.add_argument("-j", "--jobs", type=_at_least_one, default=1, metavar="N", help="tests in parallel (processes)")
    k.add_argument("-t", "--tap", action="store_true", help="TAP version 13 output")
    k.add_argument("-g", "--group", metavar="GROUP", help="only tests in GROUP (nodefault ones too)")
    k.add_argument("-a", "--all", action="store_true", help="also the nodefault tests")
    k.add_argument("-l", "--list", action="store_true", help="list the selected tests and exit")
    k.add_argument("--smp1", action="store_true", help="run smp > 1 tests on one vCPU instead of skipping them")
    k.add_argument("--kvm-param", type=_kvm_param, action="append", metavar="NAME=Y|N",
                   help="a modelled kvm module parameter (force_emulation_prefix, enable_vmware_backdoor, ...)")
    k.add_argument("--log-dir", metavar="DIR", help="each test's serial log (default: the cache's kut/logs)")
    k.add_argument("--timeout", type=float, metavar="SECONDS", help="every test's timeout (overrides the cfg's)")
    k.add_argument("--timeout-factor", type=float, default=4.0, metavar="F",
                   help="wall limit = timeout x F (the sim is slower than hardware; default 4)")
    k.set_defaults(func=cmd_kut)


# ---------------------------------------------------------------- parser and main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvmsim", description="A runnable model of Linux KVM's VMX exit handling.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run scenarios and check their expectations")
    r.add_argument("files", nargs="*", metavar="FILE", help="scenario YAML files or directories")
    r.add_argument("--json", action="store_true", help="print the result and checks as JSON")
    r.add_argument("--backend", choices=("sim", "kvm"), help="default: sim")
    r.add_argument("--trace", action="store_true", help="record and show the event trace")
    r.add_argument("--serial-out", metavar="FILE",
                   help="write the whole serial output of every run to FILE (the report shows at most "
                        "200 lines of it, wrapped; --json at most 1 MiB)")
    r.add_argument("--keep-exits", type=_keep_exits, default="default", metavar="N|all",
                   help="userspace exits kept at each end of the exit log (counts stay exact; "
                        "default 1000, all when the scenario expects a userspace stream)")
    r.add_argument("--exits-jsonl", metavar="FILE",
                   help="write every userspace exit of every run to FILE as JSON Lines, while it runs "
                        "(whatever --keep-exits keeps; schema in the README)")
    r.add_argument("--guest", metavar="FILE.S", help="quick run of a guest source with default devices")
    r.add_argument("--mode", choices=("real16", "prot32", "long64"), help="vCPU mode for --guest")
    _add_limit_flags(r)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate scenario files (and build their guests) without running them")
    c.add_argument("files", nargs="*", metavar="FILE", help=f"default: {DEFAULT_DIR}/")
    c.set_defaults(func=cmd_check)

    ls = sub.add_parser("list", help="list scenarios with their descriptions")
    ls.add_argument("dir", nargs="?", default=DEFAULT_DIR, metavar="DIR")
    ls.set_defaults(func=cmd_list)

    s = sub.add_parser("schema", help="print the scenario JSON schema")
    s.set_defaults(func=cmd_schema)

    d = sub.add_parser("diff", help="run on sim and on /dev/kvm and compare")
    d.add_argument("files", nargs="*", metavar="FILE")
    d.add_argument("--vendor-table", action="store_true",
                   help="print the known vendor differences (scenario/vendor.py) and exit")
    _add_limit_flags(d)
    d.set_defaults(func=cmd_diff)

    e = sub.add_parser("emulator-coverage", help="decoder-table coverage vs the kernel's; with FILEs, EMULTYPE use by scenario")
    e.add_argument("files", nargs="*", metavar="FILE")
    e.set_defaults(func=cmd_emulator_coverage)

    x = sub.add_parser("exit-coverage", help="each VM-exit reason's handler and what exercises it; with FILEs, "
                                             "the exits each scenario takes")
    x.add_argument("files", nargs="*", metavar="FILE")
    x.set_defaults(func=cmd_exit_coverage)

    b = sub.add_parser("bench", help="throughput figures (PIO, native, MMIO, emulator); with FILEs, time scenarios")
    b.add_argument("files", nargs="*", metavar="FILE")
    b.add_argument("--repeat", type=_at_least_one, default=3, metavar="N")
    b.add_argument("--json", action="store_true", help="the throughput figures as one JSON document")
    b.add_argument("--rounds", type=_at_least_one, default=5, metavar="N",
                   help="A/B rounds per round-trip group (medians and paired ratios over them)")
    b.add_argument("--flat", action="store_true",
                   help="also cost in run length: a 1,000,000-exit PIO and MMIO run against 10,000-exit runs")
    b.set_defaults(func=cmd_bench)

    st = sub.add_parser("stat", help="perf kvm stat report: exits (or MMIO / port accesses) with handling times")
    _add_export_flags(st)
    st.add_argument("--event", choices=("vmexit", "mmio", "ioport"), default="vmexit")
    st.add_argument("--key", choices=("sample", "time"), default="sample", help="sort by count or by mean time")
    st.set_defaults(func=cmd_stat)

    ce = sub.add_parser("census", help="emulations by EMULTYPE, entry path, instruction, outcome; host NMIs")
    _add_export_flags(ce)
    ce.add_argument("--json", action="store_true", help="print the census as JSON")
    ce.add_argument("--chart", metavar="OUT.svg|OUT.png", help="chart of exits and emulations (needs matplotlib)")
    ce.set_defaults(func=cmd_census)

    add_gdb_arguments(add_debug_parser(sub))      # --gdb [HOST:]PORT, --elf OUT

    bl = sub.add_parser("build", help="build a scenario's guest and write its ELF (symbols for gdb)")
    bl.add_argument("file", metavar="FILE")
    bl.add_argument("--elf", metavar="OUT", required=True)
    bl.set_defaults(func=cmd_build)

    add_trace_parsers(sub, lambda files: _load_all(files))
    _add_kut_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: usage errors are bad input (2), --help is 0
        return e.code if isinstance(e.code, int) else EXIT_INPUT
    try:
        return args.func(args)
    except ScenarioError as e:
        _err(e)
        return EXIT_INPUT
    except BackendError as e:  # an ioctl failed: one line naming it and the errno
        print(f"kvmsim: backend error: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush cannot fail and print again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_SIGPIPE
    except Exception as e:  # noqa: BLE001 - the one place that turns surprises into a message
        if os.environ.get("KVMSIM_DEBUG") == "1":
            raise
        print("\n".join(_bug_lines(None, e)), file=sys.stderr)
        return EXIT_INTERNAL
