"""`kvmsim stat`: the `perf kvm stat report` table, built from kvm_entry/kvm_exit/kvm_mmio/kvm_pio.

As tools/perf/builtin-kvm.c and arch/x86/util/kvm-stat.c pair the events (our own code):
  vmexit  begins at kvm_exit (key: exit reason), ends at the next kvm_entry;
  mmio    a read begins at kvm_exit and ends at kvm_mmio type read (key: gpa, R); a write begins
          at kvm_mmio type write (key: gpa, W) and ends at the next kvm_entry;
  ioport  begins at kvm_pio (key: port, POUT/PIN) and ends at the next kvm_entry.
An end with no begin before it is not counted, so the exit a run stops in (no kvm_entry after
it) is not a sample, exactly as perf drops it.  `--key time` sorts by the mean, as perf does.
Time here is the simulator's wall-clock handling time, not a real host's: labelled in the header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kvmsim.hw.vmcs import exit_reason_name
from kvmsim.probe import Event
from kvmsim.trace.events import CLOCK, RunInfo

EVENTS = ("vmexit", "mmio", "ioport")
KEYS = ("sample", "time")
NAMES = {"vmexit": "VM-EXIT", "mmio": "MMIO Access", "ioport": "IO Port Access"}
DECODE_LEN = 20   # perf's decode_str_len
KVM_TRACE_MMIO_READ_UNSATISFIED, KVM_TRACE_MMIO_READ, KVM_TRACE_MMIO_WRITE = 0, 1, 2
_MMIO_TYPES = {"unsatisfied-read": 0, "read": 1, "write": 2}
TIME_LABEL = "Time: simulator wall-clock handling time per event (kvmsim, not a real host)"


@dataclass
class Stats:
    """Welford running mean/variance, min, max and total (perf's struct stats + time)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: int = 0
    max: int = 0
    time: int = 0

    def update(self, v: int) -> None:
        self.n += 1
        d = v - self.mean
        self.mean += d / self.n
        self.m2 += d * (v - self.mean)
        self.min = v if self.n == 1 else min(self.min, v)
        self.max = max(self.max, v)
        self.time += v

    def rel_stddev(self) -> float:
        """Standard error of the mean as a percentage of the mean (perf's rel_stddev_stats)."""
        if self.n < 2 or not self.mean:
            return 0.0
        return 100.0 * math.sqrt(self.m2 / (self.n - 1) / self.n) / self.mean


def _mmio_type(fields: dict[str, Any]) -> int:
    t = fields.get("type")
    return _MMIO_TYPES.get(t, -1) if isinstance(t, str) else (t if isinstance(t, int) else -1)


@dataclass
class _Vcpu:
    start: int | None = None
    key: tuple | None = None


class KvmStat:
    """Consumer: pairs begin/end events per vCPU for one `--event` view (over every run fed)."""

    def __init__(self, event: str = "vmexit") -> None:
        if event not in EVENTS:
            raise ValueError(f"--event {event}: one of {', '.join(EVENTS)}")
        self.event = event
        self.table: dict[tuple, Stats] = {}
        self.unfinished = 0          # begins that no end followed before the run stopped
        self._vcpus: dict[int, _Vcpu] = {}
        self._last_vcpu = 0
        self.other_clocks: set[str] = set()   # a recorded file on another clock (kvmsim trace --jsonl's virtual one)

    # ---- consumer protocol
    def begin_run(self, run: RunInfo) -> None:
        self._vcpus.clear()
        if run.clock != CLOCK:
            self.other_clocks.add(run.clock)

    def end_run(self, run: RunInfo) -> None:
        self.unfinished += sum(1 for v in self._vcpus.values() if v.start is not None and v.key is not None)
        self._vcpus.clear()

    def feed(self, ev: Event, ts: int) -> None:
        if ev.kind != "tp" or ev.name not in ("kvm_entry", "kvm_exit", "kvm_mmio", "kvm_pio"):
            return
        f = ev.fields
        vid = f.get("vcpu_id", self._last_vcpu)     # kvm_mmio/kvm_pio carry no vcpu: the running one
        self._last_vcpu = vid
        rec = self._vcpus.setdefault(vid, _Vcpu())
        begin, key = self._begin(ev.name, f)
        if begin:
            rec.start, rec.key = ts, key
            return
        end, key = self._end(ev.name, f)
        if not end or rec.start is None:
            return
        key = rec.key or key
        if key is not None:
            self.table.setdefault(key, Stats()).update(ts - rec.start)
        rec.start, rec.key = None, None

    def _begin(self, name: str, f: dict[str, Any]) -> tuple[bool, tuple | None]:
        if self.event == "vmexit":
            return (True, (f.get("exit_reason", 0),)) if name == "kvm_exit" else (False, None)
        if self.event == "mmio":
            if name == "kvm_exit":
                return True, None      # a read: the key comes with its end
            if name == "kvm_mmio" and _mmio_type(f) == KVM_TRACE_MMIO_WRITE:
                return True, (f.get("gpa", 0), KVM_TRACE_MMIO_WRITE)
            return False, None
        return (True, (f.get("port", 0), f.get("rw", 0))) if name == "kvm_pio" else (False, None)

    def _end(self, name: str, f: dict[str, Any]) -> tuple[bool, tuple | None]:
        if name == "kvm_entry":
            return True, None
        if self.event == "mmio" and name == "kvm_mmio" and _mmio_type(f) == KVM_TRACE_MMIO_READ:
            return True, (f.get("gpa", 0), KVM_TRACE_MMIO_READ)
        return False, None

    # ---- the report
    def decode(self, key: tuple) -> str:
        if self.event == "vmexit":
            return exit_reason_name(key[0])
        if self.event == "mmio":
            return f"{key[0]:#x}:{'W' if key[1] == KVM_TRACE_MMIO_WRITE else 'R'}"
        return f"{key[0]:#x}:{'POUT' if key[1] else 'PIN'}"

    def rows(self, sort_key: str = "sample") -> list[tuple[str, Stats]]:
        """Largest first: by sample count, or (`time`) by mean time, as perf's keys[] say."""
        if sort_key not in KEYS:
            raise ValueError(f"--key {sort_key}: one of {', '.join(KEYS)}")
        attr = "n" if sort_key == "sample" else "mean"
        return sorted(((self.decode(k), s) for k, s in self.table.items() if s.n),
                      key=lambda r: -getattr(r[1], attr))

    def report(self, sort_key: str = "sample") -> list[str]:
        rows = self.rows(sort_key)
        total_n = sum(s.n for _, s in rows)
        total_t = sum(s.time for _, s in rows)
        label = TIME_LABEL if not self.other_clocks else \
            "Time: NOT measured: the file's timestamps are on " + "; ".join(sorted(self.other_clocks))
        out = ["", label, "", "Analyze events for all VMs, all VCPUs:", "",
               f"{NAMES[self.event]:>{DECODE_LEN}} {'Samples':>10} {'Samples%':>9} {'Time%':>9} "
               f"{'Min Time':>11} {'Max Time':>11} {'Avg time':>16} ", ""]
        for name, s in rows:
            out.append(f"{name:>{DECODE_LEN}} {s.n:>10} {s.n / total_n * 100:8.2f}% "
                       f"{(s.time / total_t * 100) if total_t else 0.0:8.2f}% "
                       f"{s.min / 1000:9.2f}us {s.max / 1000:9.2f}us "
                       f"{s.time / s.n / 1000:9.2f}us ( +-{s.rel_stddev():7.2f}% )")
        out += ["", f"Total Samples:{total_n}, Total events handled time:{total_t / 1000:.2f}us.", ""]
        if self.unfinished:
            out.append(f"Not counted: {self.unfinished} event(s) begun but not ended when the run stopped "
                       "(perf drops these too).")
        return out


def parse_report(lines: list[str]) -> dict[str, dict[str, float]]:
    """Read a report back: key -> {samples, samples_pct, time_pct, min_us, max_us, avg_us, stddev_pct}."""
    import re
    row = re.compile(r"^\s*(?P<key>\S+)\s+(?P<n>\d+)\s+(?P<sp>[\d.]+)%\s+(?P<tp>[\d.]+)%\s+(?P<min>[\d.]+)us\s+"
                     r"(?P<max>[\d.]+)us\s+(?P<avg>[\d.]+)us \( \+-\s*(?P<sd>[\d.]+)% \)$")
    out: dict[str, dict[str, float]] = {}
    for line in lines:
        m = row.match(line)
        if m:
            out[m["key"]] = {"samples": int(m["n"]), "samples_pct": float(m["sp"]), "time_pct": float(m["tp"]),
                             "min_us": float(m["min"]), "max_us": float(m["max"]), "avg_us": float(m["avg"]),
                             "stddev_pct": float(m["sd"])}
    return out
