"""`kvmsim kut`: run kvm-unit-tests' x86 tests as run_tests.sh would, each one a kvmsim scenario.

1. find the tree (--kut-dir, else the archive built into the cache: build.py);
2. read x86/unittests.cfg and select tests (names, -g GROUP);
3. decide each (decide.py): SKIP with run_tests.sh's or kvmsim's reason, or run;
4. run the others in a process pool (-j N; one VM per process, a fresh process per test), each
   through the scenario runner, its serial log kept in --log-dir/<name>.log;
5. print one run_tests.sh line per test as they finish (in cfg order), or TAP 13 with --tap,
   then the counts.  Status 0 when no test FAILs, 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from kvmsim.errors import BackendError, KvmSimBug, ScenarioError
from kvmsim.kut import build, cpu, decide as dec, machine, outcome
from kvmsim.kut.cfg import DEFAULT_TIMEOUT, UnitTest, read_cfg

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


@dataclass
class Job:
    """Everything a worker process needs to run one test (picklable)."""

    test: UnitTest
    flat: Path
    log_dir: Path
    backend: str
    kvm_params: dict[str, Any]
    kernel_version: str
    timeout_factor: float
    timeout: float | None
    note: str = ""
    qemu: str = ""                  # "tcg" / "kvm": run under QEMU's x86/run instead (qemu.py)


def default_log_dir() -> Path:
    # per command, not at the top: guest_build is only needed when kut runs
    from kvmsim.scenario.guest_build import cache_dir
    return cache_dir().parent / "kut" / "logs"


def _log(job: Job, text: str) -> None:
    try:
        (job.log_dir / f"{machine.scenario_name(job.test.name)}.log").write_text(text, encoding="utf-8")
    except OSError:
        pass    # the verdict stands without its log; the directory was checked at start


def run_job(job: Job) -> outcome.Outcome:
    """One test in this process: scenario, run, verdict, log.  Never raises."""
    t, name, t0 = job.test, job.test.name, time.monotonic()
    if job.qemu:
        # per command, not at the top: only --qemu needs it
        from kvmsim.kut import qemu
        smp = 1 if job.note.endswith("(--smp1)") else (t.smp_count or 1)
        out, text = qemu.run(t, job.flat, job.qemu, smp, job.timeout or t.timeout_seconds)
        out.seconds = time.monotonic() - t0
        _log(job, text + f"--- {out.line()}\n")
        return out
    env_file = job.log_dir / f"{machine.scenario_name(name)}.env"
    serial, header = "", f"kvmsim kut [{name}] {t.file} args={t.args!r} backend={job.backend}\n"
    if job.note:
        header += f"--- {job.note}\n"
    try:
        env_file.write_text(machine.environ_text(job.kernel_version), encoding="utf-8")
        overrides, ignored = cpu.cpuid_overrides(t.cpu, cpu.base_table(job.backend))
        if t.cpu:
            header += f"--- -cpu {t.cpu}: CPUID overrides {overrides}; not applied: {ignored or 'none'}\n"
        doc = machine.scenario_dict(t, job.flat, env_file, job.kvm_params, job.timeout_factor, job.timeout,
                                    overrides)
        sc = machine.build_scenario(doc, job.flat.parent)
        # per command, not at the top: the runner loads the whole model (startup)
        from kvmsim.scenario.runner import make_machine, run_machine
        m = make_machine(sc, job.backend)
        m.vmm.config.keep_exits = 0             # the verdict needs the serial log, not the exit log
        try:
            res = run_machine(m)
        finally:                                # a run that raises still leaves its serial output
            serial = "".join(d.text for d in m.devices.values() if hasattr(d, "text"))
            m.close()
        out = outcome.from_run(name, res.stop.reason, res.stop.code, res.stop.detail, serial,
                               shown_timeout(job))
        trailer = f"\n--- kvmsim stop: {res.stop.reason} code={res.stop.code} {res.stop.detail}".rstrip()
        trailer += f"\n--- guest instructions: {res.guest_insns}, wall {res.wall_seconds or 0:.1f} s\n"
    except ScenarioError as e:
        out, trailer = outcome.from_error(name, "scenario", e, serial), f"\n--- {e.msg}\n"
    except KvmSimBug as e:
        out, trailer = outcome.from_error(name, "kvmsim bug", e, serial), f"\n--- kvmsim bug: {e}\n"
    except BackendError as e:                   # an ioctl of the kvm backend failed
        out, trailer = outcome.from_error(name, "backend error", e, serial), f"\n--- backend error: {e}\n"
    except Exception as e:  # noqa: BLE001 - one test's internal error must not lose the others
        if os.environ.get("KVMSIM_DEBUG") == "1":
            raise
        out, trailer = outcome.from_error(name, "internal error", e, serial), f"\n--- internal error: {e!r}\n"
    out.seconds = time.monotonic() - t0
    _log(job, header + serial + trailer + f"--- {out.line()}\n")
    return out


def shown_timeout(job: Job) -> str:
    """The duration run_tests.sh's timeout line names: --timeout, else the cfg's, else 90s."""
    return f"{job.timeout:g}s" if job.timeout is not None else (job.test.timeout or DEFAULT_TIMEOUT)


def _pool_map(jobs: list[Job], n: int) -> Iterator[outcome.Outcome]:
    """Results in job order; with n > 1, a pool of n processes, a fresh one per test (one VM each)."""
    if n <= 1 or len(jobs) <= 1:
        yield from map(run_job, jobs)
        return
    ctx = multiprocessing.get_context("fork")   # the parent has built no VM: nothing shared to fork
    with ctx.Pool(processes=n, maxtasksperchild=1) as pool:
        yield from pool.imap(run_job, jobs)


class Printer:
    """run_tests.sh lines, or TAP 13 (`--tap`): one `ok`/`not ok` per report line of a run test,
    one per test that FAILs without reaching report(), and (kvmsim's addition) one `# SKIP` per
    test not run, so no test is silently dropped."""

    def __init__(self, tap: bool, out: Any = None) -> None:
        self.tap, self.out, self.n = tap, out or sys.stdout, 0
        if tap:
            self._p("TAP version 13")

    def _p(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def result(self, o: outcome.Outcome) -> None:
        if not self.tap:
            self._p(o.line())
            return
        if o.status == "SKIP" and not o.reports:
            self.n += 1
            self._p(f"ok {self.n} - {o.name} # SKIP {o.reason or o.summary}")
            return
        for prefix, text in o.reports:
            self.n += 1
            ok = "not ok" if prefix in ("FAIL", "XPASS") else "ok"
            skip = " # skip" if prefix == "SKIP" else ""
            self._p(f"{ok} {self.n} - {o.name}: {text}{skip}")
        if o.status == "FAIL" and (o.reason or not o.reports):
            self.n += 1
            self._p(f"not ok {self.n} - {o.name}: {o.reason or 'failed'}")

    def end(self) -> None:
        if self.tap:
            self._p(f"1..{self.n}")


def settings_from(args: Any, tree: build.KutTree) -> dec.Settings:
    return dec.Settings(arch=tree.arch, kvm_params=dict(args.kvm_param or {}), only_group=args.group,
                        run_nodefault=args.all, smp1=args.smp1, flat_dir=tree.flat_dir)


def main(args: Any) -> int:
    """The `kvmsim kut` command (cli.py parses, this runs)."""
    tree = build.locate(args.kut_dir, args.arch, log=lambda m: print(m, file=sys.stderr, flush=True))
    tests = read_cfg(tree.cfg)
    s = settings_from(args, tree)
    try:
        chosen = dec.select(tests, args.tests, s)
    except KeyError as e:
        raise ScenarioError(str(tree.cfg), None, f"no such test in unittests.cfg: {e.args[0]}") from None
    if args.list:
        print("\n".join(t.name for t in chosen))
        return EXIT_OK
    if args.backend == "kvm":
        # per command, not at the top: the probe is only needed for the kvm backend
        from kvmsim.realkvm.probe import kvm_available
        ok, why = kvm_available()
        if not ok:
            print(f"kvmsim kut: backend kvm: {why}", file=sys.stderr)
            return EXIT_INTERNAL          # the CLI's status for an unavailable backend
    log_dir = Path(args.log_dir) if args.log_dir else default_log_dir() / tree.arch
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ScenarioError(str(log_dir), None, f"--log-dir: cannot create: {e.strerror}") from None
    kernel = _kernel_version()
    kvm_params = {k: v for k, v in s.kvm_params.items()}
    decided = [(t, dec.decide(t, s)) for t in chosen]
    accel = getattr(args, "qemu", None) or ""
    if accel:
        # per command, not at the top: only --qemu needs it
        from kvmsim.kut.qemu import missing
        if why := missing():
            decided = [(t, d if not d.run else dec.Decision(False, why)) for t, d in decided]
    jobs = [Job(t, tree.flat_dir / t.file, log_dir, args.backend, kvm_params, kernel, args.timeout_factor,
                args.timeout, d.reason, accel) for t, d in decided if d.run]
    printer, counts, t0 = Printer(args.tap), {"PASS": 0, "FAIL": 0, "SKIP": 0}, time.monotonic()
    results = _pool_map(jobs, args.jobs)
    for t, d in decided:
        o = next(results) if d.run else outcome.Outcome(t.name, "SKIP", reason=d.reason)
        counts[o.status] += 1
        printer.result(o)
    printer.end()
    took = time.monotonic() - t0
    line = (f"kut: {len(decided)} tests, {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP "
            f"in {took:.1f} s ({'qemu accel=' + accel if accel else args.backend}; logs in {log_dir})")
    print(("# " if args.tap else "") + line, flush=True)
    return EXIT_FAIL if counts["FAIL"] else EXIT_OK


def _kernel_version() -> str:
    """The modelled kernel's version (the scenario schema's kvm.emulator.version default)."""
    # per command, not at the top: the schema (pydantic) loads only when kut runs
    from kvmsim.scenario.schema import Emulator
    return Emulator().version
