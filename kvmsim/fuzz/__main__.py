"""`python -m kvmsim.fuzz`: the random-guest campaign (`make fuzz-guests`) and its one-guest replay.

    python -m kvmsim.fuzz --count 2000 --seed 1 [--jobs 2] [--diff] [--json out.json]
    python -m kvmsim.fuzz --replay long64:8fee [--diff]     one guest, its exits and outcome
                                                            (KVMSIM_DEBUG=1: the full traceback)
    python -m kvmsim.fuzz --summary-of out.json             the summary of a saved campaign
Exit status: 0 no BUG, 1 at least one BUG, 2 bad arguments, 3 --diff without /dev/kvm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from kvmsim.fuzz import campaign as cp
from kvmsim.fuzz import guests
from kvmsim.realkvm.backend import vendor_module
from kvmsim.scenario.runner import kvm_probe

DEFAULT_COUNT = 2000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kvmsim.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"guests per mode (default {DEFAULT_COUNT})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--modes", default=",".join(guests.MODES), help="comma-separated (default: all three)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    d = cp.Limits()
    p.add_argument("--max-exits", type=int, default=d.max_exits, help="userspace exits per guest")
    p.add_argument("--wall", type=float, default=d.wall_seconds,
                   help=f"seconds per guest on /dev/kvm, and on the sim without a budget (default {d.wall_seconds})")
    p.add_argument("--insn-slice", type=int, default=d.insn_slice, metavar="N",
                   help="sim instruction budget: a host NMI every N guest instructions without an exit "
                        "(default 0: off, see campaign.Limits)")
    p.add_argument("--max-vm-exits", type=int, default=d.max_vm_exits,
                   help=f"with --insn-slice: VM exits per guest, host NMIs included (default {d.max_vm_exits})")
    p.add_argument("--sim-wall", type=float, default=d.sim_wall_seconds,
                   help=f"with --insn-slice: the sim's safety-net wall time (default {d.sim_wall_seconds})")
    p.add_argument("--diff", action="store_true", help="run every guest on sim and on /dev/kvm too")
    p.add_argument("--json", metavar="FILE", help="write every record to FILE")
    p.add_argument("--replay", metavar="MODE:HEX", help="run one guest with these bytes")
    p.add_argument("--summary-of", metavar="FILE", help="print the summary of a --json file (no run)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    return p


def _kvm_ok() -> bool:
    ok, why = kvm_probe()
    if not ok:
        print(f"kvmsim.fuzz: --diff needs the kvm backend: {why}", file=sys.stderr)
    return ok


def replay(spec: str, limits: cp.Limits, diff: bool) -> int:
    mode, _, hexed = spec.partition(":")
    try:
        code = bytes.fromhex(hexed)
        guests.guest_image(mode, code) if mode in guests.MODES else None
    except ValueError as e:
        print(f"kvmsim.fuzz: --replay {spec}: {e}", file=sys.stderr)
        return 2
    if mode not in guests.MODES:
        print(f"kvmsim.fuzz: --replay: mode {mode!r} is not one of {', '.join(guests.MODES)}", file=sys.stderr)
        return 2
    if diff and not _kvm_ok():
        return 3
    if os.environ.get("KVMSIM_DEBUG") == "1":   # no catching: the traceback itself
        cp.run_sim(mode, guests.guest_image(mode, code), limits)
    module = ""
    if diff:
        module = vendor_module()
    out, dout, raw = cp.run_guest(mode, code, limits, diff, module)
    print(f"{mode} bytes {code.hex()}")
    for backend, res in raw.items():
        print(f"  {backend}: stop {res.stop.reason}" + (f" {res.stop.detail}" if res.stop.detail else "")
              + f", {len(res.userspace)} userspace exits, rip {res.regs.get('rip', 0):#x}")
        for e in res.userspace[-8:]:
            print(f"    {e.describe()}")
    print(f"outcome: {out.label}" + (f": {out.detail}" if out.detail else ""))
    if dout is not None:
        print(f"sim vs kvm: {dout.label}" + (f" ({dout.detail})" if dout.detail else ""))
    return 1 if out.kind == "bug" else 0


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    limits = cp.Limits(a.max_exits, a.wall, a.insn_slice, a.max_vm_exits, a.sim_wall)
    if a.worker:
        return cp.worker(a.mode, a.seed, a.start, a.count, limits, a.diff)
    if a.replay:
        return replay(a.replay, limits, a.diff)
    if a.summary_of:
        with open(a.summary_of) as f:
            doc = json.load(f)
        records = [cp.Record.from_dict(r) for r in doc["records"]]
        print("\n".join(cp.summary(records, doc["modes"], doc["seed"], doc.get("seconds", 0.0))))
        return 1 if any(r.outcome.kind == "bug" for r in records) else 0
    modes = [m for m in a.modes.split(",") if m]
    if bad := [m for m in modes if m not in guests.MODES]:
        print(f"kvmsim.fuzz: unknown mode {bad[0]!r} (one of {', '.join(guests.MODES)})", file=sys.stderr)
        return 2
    if a.diff and not _kvm_ok():
        return 3
    for m in modes:
        guests.template(m)   # build errors surface here, once, not in every worker
    t0 = time.monotonic()
    records = cp.campaign(modes, a.count, a.seed, limits, jobs=a.jobs, diff=a.diff, progress=True)
    seconds = time.monotonic() - t0
    print("\n".join(cp.summary(records, modes, a.seed, seconds)), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"seed": a.seed, "count": a.count, "modes": modes, "seconds": round(seconds, 1),
                       "limits": dataclasses.asdict(limits),
                       "records": [r.to_dict() for r in records]}, f, indent=1)
    return 1 if any(r.outcome.kind == "bug" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
