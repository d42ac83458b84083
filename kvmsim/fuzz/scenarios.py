"""`make fuzz-scenarios`: `kvmsim check` then `kvmsim run` on N seeded mutants of the shipped scenarios.

    python -m kvmsim.fuzz.scenarios --count 2000 --seed 1 [--jobs 2] [--json out.json]
    python -m kvmsim.fuzz.scenarios --replay 1:417        one mutant, by seed:index, through the real CLI
    python -m kvmsim.fuzz.scenarios --write 1:417 DIR     just write it (DIR/s1-00417.yaml)
Exit status: 0 no BUG, 1 at least one BUG, 2 bad arguments.

    1. the mutants (fuzz/mutate.py) are a pure function of (seed, index);
    2. workers (`--worker`, started by campaign.run_pool) write each mutant to a scratch directory and
       run the CLI's own `main(["check", F])` and `main(["run", F, *RUN_FLAGS])` in-process, with
       fds 1 and 2 sent to a pipe whose bytes are counted (the first few KiB kept);
    3. each file is classified (classify): status 3 from either command, a run with more than
       OUTPUT_BOUND bytes of output, a file `check` accepts and `run` rejects (status 2: rejected
       before the guest starts) or the other way round, a worker silent for HANG_AFTER seconds
       (hang), dead (crash) or above MAX_RSS (memory) are BUGs; every JSON_EVERY-th file also runs
       with --json, a BUG unless stdout is one JSON document and the status is the same;
    4. the summary: files by outcome, outcomes by mutation operator, and per BUG a replay command.

In-process commands keep a file at ~0.1 s instead of ~0.7 s for two interpreter start-ups; the
workers are still separate processes, so a hang or a crash is counted, never the end of the campaign.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kvmsim import cli
from kvmsim.fuzz import mutate
from kvmsim.fuzz.campaign import _table, run_pool

DEFAULT_COUNT = 2000
# Tight limits: any run ends in seconds (they override whatever the mutant's limits say).
RUN_FLAGS = ["--max-insns", "2000000", "--max-exits", "2000", "--timeout", "5"]
OUTPUT_BOUND = 256 << 10     # bytes one command may print (a report bounds its exit log and serial)
HANG_AFTER = 90.0            # seconds for check + run of one file (run: 5 s; each assembler run: 20 s)
MAX_RSS = 3 << 30            # a worker above this is killed (BUG memory)
KEEP = 2048                  # bytes of each command's output kept for the record
JSON_EVERY = 4               # every 4th file also runs with --json: one document, the same status
JSON_KEEP = 64 << 20         # stdout bytes of a --json run kept to parse

# Outcome kinds and labels
REJECTED, RAN, BUG = "rejected", "ran", "bug"


@dataclass
class FileResult:
    index: int
    base: str          # the shipped scenario it came from
    ops: str           # mutation operators, '+'-joined
    check: int | None  # exit status (None: not reached)
    run: int | None
    out_bytes: int     # the larger of the two commands' output sizes
    kind: str
    label: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- one file (in a worker)

def _capture(argv: list[str], stdout_keep: int = 0) -> tuple[int, int, str, bytes]:
    """cli.main(argv) with fds 1 and 2 on pipes: (status, bytes printed on both, the first KEEP of
    them, the first `stdout_keep` bytes of stdout alone)."""
    pipes = [os.pipe(), os.pipe()]        # fd 1, fd 2
    got = {"n": 0, "head": b"", "out": b""}
    lock = threading.Lock()

    def drain(r: int, is_out: bool) -> None:
        while chunk := os.read(r, 1 << 16):
            with lock:
                got["n"] += len(chunk)
                if len(got["head"]) < KEEP:
                    got["head"] += chunk[:KEEP - len(got["head"])]
                if is_out and len(got["out"]) < stdout_keep:
                    got["out"] += chunk[:stdout_keep - len(got["out"])]
        os.close(r)

    threads = [threading.Thread(target=drain, args=(r, i == 0), daemon=True) for i, (r, _w) in enumerate(pipes)]
    for t in threads:
        t.start()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    for fd, (_r, w) in zip((1, 2), pipes):
        os.dup2(w, fd)
        os.close(w)
    try:
        status = cli.main(argv)
    except SystemExit as e:   # not expected from main(); counted as what it says
        status = e.code if isinstance(e.code, int) else 3
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        for t in threads:
            t.join()
    return status, got["n"], got["head"].decode("utf-8", "replace"), got["out"]


def json_problem(status: int, human_status: int, stdout: bytes) -> str:
    """Why `run --json` broke its promise (one JSON document, the same status as without --json), or ''."""
    if status != human_status:
        return f"status {status} with --json, {human_status} without"
    try:
        doc = json.loads(stdout)
    except ValueError as e:
        return f"stdout is not one JSON document ({len(stdout):,} bytes): {e}"
    if not isinstance(doc, dict) or "scenario" not in doc and "error" not in doc and "file" not in doc:
        return f"the JSON document is not a result or error object: {str(doc)[:80]}"
    return ""


def _first_line(text: str, prefer: tuple[str, ...] = ()) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for p in prefer:
        for ln in lines:
            if p in ln:
                return ln[:300]
    return lines[0][:300] if lines else ""


def classify(check: int, run: int, check_out: tuple[int, str], run_out: tuple[int, str]) -> tuple[str, str, str]:
    """Step 3: (kind, label, detail) of one file from its two commands' statuses and outputs."""
    bugline = ("internal error", "kvmsim bug", "Traceback", "Error")
    if check == 3:
        return BUG, "BUG status 3 from check", _first_line(check_out[1], bugline)
    if run == 3:
        return BUG, "BUG status 3 from run", _first_line(run_out[1], bugline)
    for what, (n, text) in (("check", check_out), ("run", run_out)):
        if n > OUTPUT_BOUND:
            return BUG, "BUG output over bound", f"{what} printed {n:,} bytes (bound {OUTPUT_BOUND:,})"
    if check == 0 and run == 2:
        return BUG, "BUG check ok, run rejects", _first_line(run_out[1], ("error",))
    if check == 2 and run != 2:
        return BUG, "BUG check rejects, run runs", _first_line(check_out[1], ("error",))
    if check not in (0, 2) or run not in (0, 1, 2):
        return BUG, "BUG unexpected status", f"check {check}, run {run}"
    if check == 2:
        return REJECTED, "rejected (status 2)", _first_line(check_out[1], ("error",))
    return RAN, f"ran, status {run}", ""


def one_file(seed: int, index: int, directory: Path) -> FileResult:
    """Steps 1-3 for one mutant; the file is deleted again unless it is a BUG."""
    base, ops, path = mutate.write_mutant(seed, index, directory)
    check_st, check_n, check_text, _ = _capture(["check", str(path)])
    run_st, run_n, run_text, _ = _capture(["run", str(path), *RUN_FLAGS])
    kind, label, detail = classify(check_st, run_st, (check_n, check_text), (run_n, run_text))
    if kind != BUG and index % JSON_EVERY == 0:
        js_st, _n, js_text, js_out = _capture(["run", "--json", str(path), *RUN_FLAGS], stdout_keep=JSON_KEEP)
        if (why := json_problem(js_st, run_st, js_out)):
            kind, label, detail = BUG, "BUG run --json", f"{why}; {_first_line(js_text, ('error',))}"
    if kind != BUG:
        path.unlink(missing_ok=True)
    return FileResult(index, base, ops, check_st, run_st, max(check_n, run_n), kind, label, detail)


def worker(seed: int, start: int, count: int, directory: Path) -> int:
    """Step 2: {"start": i} then one JSON record per file, on stdout."""
    os.environ.pop("KVMSIM_DEBUG", None)
    os.environ["KVMSIM_CACHE_DIR"] = str(directory / "cache")   # mutants do not evict the user's guest cache
    mutate.prepare_dir(directory)
    out = os.fdopen(os.dup(1), "w", buffering=1)   # records go here; fd 1 itself is captured per command
    for i in range(start, start + count):
        out.write(json.dumps({"start": i}) + "\n")
        out.write(json.dumps(one_file(seed, i, directory).to_dict()) + "\n")
    out.close()
    return 0


# ---------------------------------------------------------------- the parent

def worker_command(seed: int, start: int, end: int, directory: Path) -> list[str]:
    return [sys.executable, "-m", "kvmsim.fuzz.scenarios", "--worker", "--seed", str(seed), "--start", str(start),
            "--count", str(end - start), "--dir", str(directory)]


def campaign(count: int, seed: int, jobs: int = 1, directory: Path | None = None, progress: bool = False,
             hang_after: float = HANG_AFTER) -> list[FileResult]:
    """Every file's result, by index.  BUG files stay in `directory` (default: a temporary one, removed)."""
    own = directory is None
    work = Path(tempfile.mkdtemp(prefix="kvmsim-fuzz-scen-")) if own else Path(directory)  # type: ignore[arg-type]
    work.mkdir(parents=True, exist_ok=True)
    results: list[FileResult] = []
    t0 = time.monotonic()
    size = max(1, min(100, -(-count // max(1, jobs))))
    todo = [("scenarios", s, min(count, s + size)) for s in range(0, count, size)]

    def on_lost(_key: str, i: int, why: str, kind: str) -> None:
        base, ops, _ = mutate.mutant(seed, i)
        results.append(FileResult(i, base, ops, None, None, 0, BUG, f"BUG {kind}", why))

    def tick() -> None:
        if progress and len(results) % 250 == 0:
            print(f"  {len(results)}/{count} files, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    try:
        run_pool(todo, lambda _k, s, e: worker_command(seed, s, e, work),
                 lambda _k, d: results.append(FileResult(**d)), on_lost, jobs, hang_after, tick,
                 max_rss=MAX_RSS, noun="file")
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return sorted(results, key=lambda r: r.index)


def replay_command(seed: int, index: int) -> str:
    return f".venv/bin/python -m kvmsim.fuzz.scenarios --replay {seed}:{index}"


def summary(results: list[FileResult], seed: int, seconds: float, jobs: int) -> list[str]:
    """Step 4 as text lines."""
    kinds = Counter(r.kind for r in results)
    labels = Counter(r.label for r in results)
    out = [f"scenario mutants: seed {seed}, {len(results)} files from {len(mutate.corpus())} shipped scenarios, "
           f"{jobs} job(s), {seconds:.0f} s",
           f"the campaign again: make fuzz-scenarios FUZZ_SCENARIOS={len(results)} FUZZ_SEED={seed} FUZZ_JOBS={jobs}",
           f"each file: kvmsim check FILE; kvmsim run FILE {' '.join(RUN_FLAGS)}", ""]
    width = max([len("outcome")] + [len(k) for k in labels])
    out.append(f"{'outcome':<{width}}  {'files':>6}")
    for label, n in sorted(labels.items(), key=lambda kv: (kv[0].startswith("BUG"), -kv[1])):
        out.append(f"{label:<{width}}  {n:>6}")
    js = sum(r.index % JSON_EVERY == 0 and r.label != "BUG hang" for r in results)
    out += ["", f"rejected {kinds[REJECTED]}, ran {kinds[RAN]}, BUGs {kinds[BUG]}; "
            f"{js} of the files also ran with --json", ""]
    rows: dict[str, Counter] = {}
    for r in results:
        rows.setdefault(r.ops.split("+")[0], Counter())[r.kind] += 1
    out += list(_table("first operator", rows, [REJECTED, RAN, BUG]))
    bugs = [r for r in results if r.kind == BUG]
    if bugs:
        out += ["", "BUGs (reproduce with the command after each):"]
        for r in bugs:
            out.append(f"  #{r.index} {r.base} [{r.ops}]: {r.label}: {r.detail}")
            out.append(f"      {replay_command(seed, r.index)}")
    return out


# ---------------------------------------------------------------- replay: the real CLI, in subprocesses

def replay(seed: int, index: int, directory: Path, timeout: float = HANG_AFTER) -> int:
    """Write the mutant, run `kvmsim check` and `kvmsim run` on it as a user would; 1 if it is a BUG."""
    mutate.prepare_dir(directory)
    base, ops, path = mutate.write_mutant(seed, index, directory)
    kvmsim = [sys.executable, "-m", "kvmsim"]
    print(f"mutant {seed}:{index} of {base} [{ops}]: {path}")
    st: list[int] = []
    outs: list[tuple[int, str]] = []
    env = {k: v for k, v in os.environ.items() if k != "KVMSIM_DEBUG"}
    for argv in (["check", str(path)], ["run", str(path), *RUN_FLAGS]):
        print(f"$ kvmsim {' '.join(argv)}")
        try:
            p = subprocess.run(kvmsim + argv, capture_output=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            print(f"  no end after {timeout:.0f} s: BUG hang")
            return 1
        text = (p.stdout + p.stderr).decode("utf-8", "replace")
        print("\n".join("  " + ln for ln in text[:KEEP].splitlines()[:20]))
        print(f"  status {p.returncode}, {len(p.stdout) + len(p.stderr):,} bytes of output")
        st.append(p.returncode)
        outs.append((len(p.stdout) + len(p.stderr), text[:KEEP]))
    kind, label, detail = classify(st[0], st[1], outs[0], outs[1])
    if kind != BUG and index % JSON_EVERY == 0:
        argv = ["run", "--json", str(path), *RUN_FLAGS]
        print(f"$ kvmsim {' '.join(argv)}")
        try:
            p = subprocess.run(kvmsim + argv, capture_output=True, timeout=timeout, env=env, check=False)
            why = json_problem(p.returncode, st[1], p.stdout)
        except subprocess.TimeoutExpired:
            why = f"no end after {timeout:.0f} s"
        print(f"  {why or 'one JSON document, same status'}")
        if why:
            kind, label, detail = BUG, "BUG run --json", why
    print(f"outcome: {label}" + (f": {detail}" if detail else ""))
    return 1 if kind == BUG else 0


def _seed_index(text: str) -> tuple[int, int]:
    s, _, i = text.partition(":")
    try:
        return int(s), int(i)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SEED:INDEX like 1:417, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kvmsim.fuzz.scenarios", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"mutated files (default {DEFAULT_COUNT})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--json", metavar="FILE", help="write every file's result to FILE")
    p.add_argument("--keep", metavar="DIR", help="keep the BUG files in DIR")
    p.add_argument("--replay", type=_seed_index, metavar="SEED:INDEX", help="one mutant through the real CLI")
    p.add_argument("--write", nargs=2, metavar=("SEED:INDEX", "DIR"), help="write one mutant to DIR")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a.seed, a.start, a.count, Path(a.dir))
    if a.write:
        seed, index = _seed_index(a.write[0])
        Path(a.write[1]).mkdir(parents=True, exist_ok=True)
        print(mutate.write_mutant(seed, index, Path(a.write[1]))[2])
        return 0
    if a.replay:
        return replay(*a.replay, Path(a.keep or tempfile.mkdtemp(prefix="kvmsim-fuzz-replay-")))
    if a.count < 1 or a.jobs < 1:
        print("python -m kvmsim.fuzz.scenarios: --count and --jobs must be at least 1", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    results = campaign(a.count, a.seed, a.jobs, Path(a.keep) if a.keep else None, progress=True)
    seconds = time.monotonic() - t0
    print("\n".join(summary(results, a.seed, seconds, a.jobs)), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"seed": a.seed, "count": a.count, "seconds": round(seconds, 1), "run_flags": RUN_FLAGS,
                       "results": [r.to_dict() for r in results]}, f, indent=1)
    return 1 if any(r.kind == BUG for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
