"""The random-guest campaign: N guests per mode through the whole simulator, in worker processes.

    1. the parent splits each mode's guest indices into chunks and starts up to `jobs` workers
       (`python -m kvmsim.fuzz --worker ...`), one chunk each;
    2. a worker builds the mode's template once, then for each index: announces it, runs the
       guest (runner.run_scenario with the patched image; with `diff` on sim and on /dev/kvm),
       and prints one JSON record;
    3. the parent reads the records; a worker silent for longer than a guest's wall limit plus
       HANG_GRACE is killed (BUG hang), one that dies mid-guest is a BUG crash; either way a new
       worker carries on after that guest;
    4. the summary: outcome counts per mode, every BUG with a one-command reproducer, and with
       `diff` how often the sim and kvm userspace exit streams agree.

Workers are separate processes so that a hang or a crash inside unicorn is caught and counted,
never the end of the campaign.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from kvmsim.errors import KvmSimBug
from kvmsim.fuzz import guests
from kvmsim.fuzz.outcome import PVM_EMULATION_FAILURE, Outcome, bug, classify, diff_outcome
from kvmsim.realkvm.backend import vendor_module
from kvmsim.scenario.runner import make_machine, run_machine, run_scenario
from kvmsim.uapi import HostEvent

HANG_GRACE = 10.0   # seconds past a guest's wall limit before its worker counts as hung
OVERRUN = 5.0       # seconds past the wall limit that a run which did end still counts as a hang


@dataclass(frozen=True)
class Limits:
    """Per guest.  Wall time is the limit by default, so a guest cut by it may end differently from
    run to run.  With insn_slice > 0 the sim's limit is deterministic instead: a host NMI every
    insn_slice guest instructions that pass without a VM exit, and the run ends after max_vm_exits
    VM exits of any kind (guests run with limits.max_guest_insns null, uncounted: see guests.scenario;
    an exact instruction budget there is a possible replacement for this one).  Off by default: with host NMIs armed the silicon loses long64 faults (issue 9 report;
    test_budget_keeps_long64_faults), and sim_wall_seconds is then only a safety net."""

    max_exits: int = 1000            # userspace exits
    wall_seconds: float = 0.25       # /dev/kvm, and the sim without a budget
    insn_slice: int = 0              # guest instructions between host NMIs (sim); 0: no budget
    max_vm_exits: int = 300          # VM exits, host NMIs included (sim, with a budget)
    sim_wall_seconds: float = 5.0    # sim with a budget: only a run the budget fails to stop gets here

    @property
    def sim_wall(self) -> float:
        return self.sim_wall_seconds if self.insn_slice else self.wall_seconds


@dataclass
class Record:
    mode: str
    index: int
    code: str                         # hex of the random bytes
    outcome: Outcome
    diff: Outcome | None = None       # with --diff: sim vs kvm

    def to_dict(self) -> dict[str, Any]:
        d = {"mode": self.mode, "index": self.index, "bytes": self.code, "kind": self.outcome.kind,
             "label": self.outcome.label, "detail": self.outcome.detail}
        if self.diff is not None:
            d["diff"] = {"kind": self.diff.kind, "label": self.diff.label, "detail": self.diff.detail}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        df = d.get("diff")
        return cls(d["mode"], d["index"], d["bytes"], Outcome(d["kind"], d["label"], d.get("detail", "")),
                   Outcome(df["kind"], df["label"], df.get("detail", "")) if df else None)


# ---------------------------------------------------------------- one guest (in a worker)

def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def run_sim(mode: str, image: Any, limits: Limits) -> Any:
    """One guest on the sim, as runner.run_scenario does it, with the VM-exit budget armed: host
    events (uapi.HostEvent) for a host NMI every insn_slice guest instructions, and a signal to
    the vCPU thread at max_vm_exits VM exits (KVM_RUN returns -EINTR before that entry: the vCPU
    state is whole)."""
    sc = guests.scenario(mode, f"fuzz-{mode}", limits.max_exits, limits.sim_wall)
    m = make_machine(sc, "sim", image)
    try:
        if limits.insn_slice:
            m.vcpu.host_event(HostEvent("HOST_NMI", limits.insn_slice))            # type: ignore[attr-defined]
            m.vcpu.host_event(HostEvent("SIGNAL", at_exit=limits.max_vm_exits))   # type: ignore[attr-defined]
            m.vmm.config.limit_reached = _vm_exit_budget(m, limits)
        return run_machine(m)
    finally:
        m.close()


def _vm_exit_budget(m: Any, limits: Limits) -> Callable[[], str | None]:
    """The VMM's question at -EINTR: the VM-exit budget's stop detail once the budget's signal came,
    else whatever the machine answered before (the instruction limit)."""
    before, stat = m.vmm.config.limit_reached, m.vcpu.vcpu.stat
    detail = (f"max_vm_exits {limits.max_vm_exits} reached "
              f"(a host NMI every {limits.insn_slice} guest instructions)")
    return lambda: detail if stat.exits >= limits.max_vm_exits else (before() if before else None)


def run_guest(mode: str, code: bytes, limits: Limits, diff: bool = False,
              module: str = "") -> tuple[Outcome, Outcome | None, dict[str, Any]]:
    """Run one guest on sim (and on kvm with diff): its outcome, the diff outcome, the raw results."""
    image = guests.guest_image(mode, code)
    raw: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        sim = run_sim(mode, image, limits)
        out = classify(sim)
        raw["sim"] = sim
        took = time.monotonic() - t0
        if took > limits.sim_wall + OVERRUN:
            out = bug("hang", f"the run took {took:.1f} s with a wall limit of {limits.sim_wall} s "
                      f"(ended as {out.label})")
    except KvmSimBug as e:
        out, sim = bug("KvmSimBug", _one_line(e)), None
    except Exception as e:  # noqa: BLE001 - any traceback from the simulator is what we count
        out, sim = bug("traceback", _one_line(e) + " @ " + _where(e)), None
    if not diff:
        return out, None, raw
    sc = guests.scenario(mode, f"fuzz-{mode}", limits.max_exits, limits.wall_seconds)
    try:
        kvm = run_scenario(sc, backend="kvm", host_events=False, image=image)
        raw["kvm"] = kvm
    except Exception as e:  # noqa: BLE001 - a backend failure is reported, not raised
        return out, Outcome("error", f"kvm backend error: {type(e).__name__}", _one_line(e)), raw
    if sim is None:
        return out, Outcome("differ", f"sim {out.label} / kvm {classify(kvm).label}"), raw
    return out, diff_outcome(sim, kvm, module, mode), raw


def _where(e: BaseException) -> str:
    """file:line of the innermost frame, for a traceback's one-line summary."""
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return "?"
    f = tb[-1]
    return f"{os.path.relpath(f.filename)}:{f.lineno}"


def worker(mode: str, seed: int, start: int, count: int, limits: Limits, diff: bool) -> int:
    """Step 2: records on stdout, one JSON line each, after a {"start": i} line per guest."""
    module = ""
    if diff:
        module = vendor_module()
    guests.template(mode)
    for i in range(start, start + count):
        code = guests.guest_bytes(seed, mode, i)
        print(json.dumps({"start": i}), flush=True)
        out, dout, _ = run_guest(mode, code, limits, diff, module)
        print(json.dumps(Record(mode, i, code.hex(), out, dout).to_dict()), flush=True)
    return 0


# ---------------------------------------------------------------- the parent

@dataclass
class _Worker:
    key: Any                      # which piece of work: the mode (guests), a label (scenarios)
    start: int
    end: int
    proc: subprocess.Popen
    err: Any                      # its stderr (a temporary file): the last line names a crash
    buf: bytes = b""
    current: int | None = None    # the item announced and not yet reported
    next: int = -1                # the first item it has not reported (set from start)
    since: float = field(default_factory=time.monotonic)


def worker_command(mode: str, start: int, end: int, seed: int, limits: Limits, diff: bool) -> list[str]:
    """The worker process for guests [start, end) of `mode` (tests put a misbehaving one here)."""
    return [sys.executable, "-m", "kvmsim.fuzz", "--worker", "--mode", mode, "--seed", str(seed),
            "--start", str(start), "--count", str(end - start), "--max-exits", str(limits.max_exits),
            "--max-vm-exits", str(limits.max_vm_exits), "--insn-slice", str(limits.insn_slice),
            "--wall", str(limits.wall_seconds), "--sim-wall", str(limits.sim_wall_seconds)] + (["--diff"] if diff else [])


def _spawn(key: Any, start: int, end: int, argv: list[str]) -> _Worker:
    env = dict(os.environ, UC_IGNORE_REG_BREAK="1")
    err = tempfile.TemporaryFile()
    # Its own process group: killing a worker also kills what it started (an assembler, say).
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
    return _Worker(key, start, end, proc, err, next=start)


def _kill(w: _Worker) -> None:
    try:
        os.killpg(w.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _last_line(f: Any) -> str:
    f.seek(0)
    lines = [x for x in f.read()[-4096:].decode(errors="replace").splitlines() if x.strip()]
    return lines[-1].strip() if lines else ""


def _rss(pid: int) -> int:
    """Resident set size of a process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def chunks(modes: list[str], count: int, jobs: int) -> list[tuple[str, int, int]]:
    """Step 1: (mode, start, end) pieces, about `jobs` per mode so the workers stay busy to the end."""
    size = max(1, -(-count // max(1, jobs)))
    return [(m, s, min(count, s + size)) for m in modes for s in range(0, count, size)]


def run_pool(todo: list[tuple[Any, int, int]], command: Callable[[Any, int, int], list[str]],
             on_record: Callable[[Any, dict[str, Any]], None],
             on_lost: Callable[[Any, int, str, str], None], jobs: int, hang_after: float,
             progress: Callable[[], None] | None = None, max_rss: int = 0, noun: str = "item") -> None:
    """Steps 2-3 for any campaign: run pieces (key, start, end) of work in up to `jobs` workers.

    A worker prints {"start": i} before item i and one JSON record with "index" after it.  An item
    whose worker is silent for `hang_after` seconds (on_lost kind "hang"), dies ("crash") or grows
    past `max_rss` bytes ("memory") is charged to it, and a new worker carries on after it.
    """
    todo = list(todo)
    sel = selectors.DefaultSelector()
    running: list[_Worker] = []

    def start_next() -> None:
        while todo and len(running) < jobs:
            key, s, e = todo.pop(0)
            w = _spawn(key, s, e, command(key, s, e))
            running.append(w)
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)  # type: ignore[arg-type]

    def retire(w: _Worker, why: str, kind: str) -> None:
        """The worker is gone (finished, crashed or killed): count its item, resume after it."""
        sel.unregister(w.proc.stdout)  # type: ignore[arg-type]
        running.remove(w)
        rc = w.proc.wait()
        _kill(w)   # anything it left running in its group
        w.proc.stdout.close()  # type: ignore[union-attr]
        last = _last_line(w.err)
        w.err.close()
        # A worker that dies before announcing an item is charged with the next one, so none is lost.
        i = w.current if w.current is not None else (w.next if w.next < w.end else None)
        if i is not None:
            err = why if why else f"worker exited with status {rc} during this {noun}" + (f": {last}" if last else "")
            on_lost(w.key, i, err, kind or "crash")
            if i + 1 < w.end:
                todo.insert(0, (w.key, i + 1, w.end))

    try:
        _pool_loop(sel, running, start_next, retire, on_record, hang_after, progress, max_rss, noun)
    finally:
        for w in list(running):   # interrupted: no worker (or its children) outlives the campaign
            _kill(w)


def _pool_loop(sel: Any, running: list[_Worker], start_next: Callable[[], None],
               retire: Callable[[_Worker, str, str], None], on_record: Callable[[Any, dict[str, Any]], None],
               hang_after: float, progress: Callable[[], None] | None, max_rss: int, noun: str) -> None:
    start_next()
    while running:
        for key, _ in sel.select(timeout=1.0):
            w: _Worker = key.data
            chunk = os.read(w.proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
            if not chunk:
                retire(w, "", "")
                continue
            w.buf += chunk
            *lines, w.buf = w.buf.split(b"\n")
            for line in lines:
                d = json.loads(line)
                if "start" in d:
                    w.current, w.since = d["start"], time.monotonic()
                else:
                    on_record(w.key, d)
                    w.current, w.next = None, d["index"] + 1
                    if progress is not None:
                        progress()
        now = time.monotonic()
        for w in [w for w in running if w.current is not None and now - w.since > hang_after]:
            _kill(w)
            retire(w, f"no result {now - w.since:.0f} s after the {noun} started", "hang")
        if max_rss:
            for w in [w for w in running if _rss(w.proc.pid) > max_rss]:
                _kill(w)
                retire(w, f"worker memory above {max_rss >> 20} MiB", "memory")
        start_next()


def campaign(modes: list[str], count: int, seed: int, limits: Limits, jobs: int = 1,
             diff: bool = False, progress: bool = False, hang_grace: float = HANG_GRACE) -> list[Record]:
    """Steps 1-3: every guest's record, in (mode, index) order."""
    records: list[Record] = []
    hang_after = limits.sim_wall + (limits.wall_seconds if diff else 0.0) + hang_grace
    total, t0 = len(modes) * count, time.monotonic()

    def on_lost(mode: str, i: int, err: str, kind: str) -> None:
        if kind == "hang":
            err = f"{err} (wall limits: sim {limits.sim_wall} s, kvm {limits.wall_seconds} s)"
        records.append(Record(mode, i, guests.guest_bytes(seed, mode, i).hex(), bug(kind, err)))

    def tick() -> None:
        if progress and len(records) % 500 == 0:
            print(f"  {len(records)}/{total} guests, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    run_pool(chunks(modes, count, jobs), lambda m, s, e: worker_command(m, s, e, seed, limits, diff),
             lambda _m, d: records.append(Record.from_dict(d)), on_lost, jobs, hang_after, tick, noun="guest")
    order = {m: k for k, m in enumerate(modes)}
    return sorted(records, key=lambda r: (order[r.mode], r.index))


# ---------------------------------------------------------------- the summary

def _table(title: str, rows: dict[str, Counter], modes: list[str]) -> Iterator[str]:
    """Counts per label and mode, most frequent first, BUG rows last."""
    labels = sorted(rows, key=lambda l: (l.startswith("BUG"), -sum(rows[l].values()), l))
    width = max([len(title)] + [len(l) for l in labels])
    yield f"{title:<{width}}  " + "  ".join(f"{m:>7}" for m in modes) + f"  {'total':>7}"
    for l in labels:
        yield f"{l:<{width}}  " + "  ".join(f"{rows[l][m]:>7}" for m in modes) + f"  {sum(rows[l].values()):>7}"


def replay_command(r: Record, diff: bool = False) -> str:
    return f"python -m kvmsim.fuzz --replay {r.mode}:{r.code}" + (" --diff" if diff else "")


def summary(records: list[Record], modes: list[str], seed: int, seconds: float) -> list[str]:
    """Step 4 as text lines."""
    rows: dict[str, Counter] = {}
    for r in records:
        rows.setdefault(r.outcome.label, Counter())[r.mode] += 1
    per_mode = Counter(r.mode for r in records)
    kinds = Counter(r.outcome.kind for r in records)
    out = [f"random guests: seed {seed}, " + ", ".join(f"{per_mode[m]} {m}" for m in modes)
           + f" ({seconds:.0f} s)", ""]
    out += list(_table("outcome", rows, modes))
    out += ["", f"defined exits {kinds['defined']}, limits {kinds['limit']}, BUGs {kinds['bug']}"]
    bugs = [r for r in records if r.outcome.kind == "bug"]
    if bugs:
        groups = Counter(f"{r.mode}: {r.outcome.label}: {r.outcome.detail}" for r in bugs)
        out += ["", "BUGs by mode and error:"] + [f"  {n:>5}  {g}" for g, n in groups.most_common()]
        out += ["", "BUGs (reproduce with the command after each):"]
        for r in bugs:
            out.append(f"  {r.mode} #{r.index} bytes {r.code}: {r.outcome.label}: {r.outcome.detail}")
            out.append(f"      {replay_command(r)}")
    diffs = [r for r in records if r.diff is not None]
    if diffs:
        drows: dict[str, Counter] = {}
        for r in diffs:
            drows.setdefault(r.diff.label, Counter())[r.mode] += 1  # type: ignore[union-attr]
        agree = sum(r.diff.kind == "agree" for r in diffs)  # type: ignore[union-attr]
        vendor = sum(r.diff.kind == "vendor" for r in diffs)  # type: ignore[union-attr]
        cut = sum(r.diff.kind == "limit" for r in diffs)  # type: ignore[union-attr]
        out += ["", f"sim vs /dev/kvm: userspace exit streams agree on {agree} of {len(diffs)} guests "
                f"({100 * agree / len(diffs):.1f}%); {cut} both cut by a limit (agree up to the cut), "
                f"{vendor} labelled vendor artefacts, {len(diffs) - agree - cut - vendor} other disagreements", ""]
        out += list(_table("sim vs kvm", drows, modes))
        pvm = [r.diff.detail for r in diffs if r.diff.label == PVM_EMULATION_FAILURE]  # type: ignore[union-attr]
        if pvm:
            insns = Counter(d.rpartition("kvm failed on ")[2].split(" (")[0] for d in pvm)
            sims = Counter(d.split(";")[0].removeprefix("sim ") for d in pvm)
            out += ["", "kvm_pvm emulation failures by instruction: "
                    + ", ".join(f"{m} {n}" for m, n in insns.most_common(12)),
                    "  and what the sim did there (a lost exit shows as hlt where the trailer was due): "
                    + ", ".join(f"{m} {n}" for m, n in sims.most_common(12))]
        out += ["", "first disagreement of each kind (replay with the command):"]
        seen: set[str] = set()
        for r in diffs:
            d = r.diff
            if d is not None and d.kind in ("differ", "error") and d.label not in seen:
                seen.add(d.label)
                out += [f"  {d.label}: {r.mode} bytes {r.code}" + (f" ({d.detail})" if d.detail else ""),
                        f"      {replay_command(r, True)}"]
    return out
