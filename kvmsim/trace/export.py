"""Exports people open in their own tools: a Chrome/Perfetto trace-event timeline and a census chart.

Timeline (Trace Event Format, JSON Object Format, streamed: bounded memory for long runs).
One process per run; its threads are tracks:
  tid 1 "vCPU 0: guest"          X slices "guest" from kvm_entry to kvm_exit
  tid 2 "vCPU 0: exit handling"  X slices named by exit reason, kvm_exit to the next kvm_entry
  tid 3 "vCPU 0: KVM (kernel)"   B/E slices per modelled kernel function, nested as they were
                                 called; tracepoints as instant events with their fields
  tid 4 "VMM (userspace)"        X slices from KVM_RUN returning to the next KVM_RUN, named by
                                 the kvm_run exit reason
Timestamps are microseconds of the simulator's wall clock (labelled in the metadata).
"""

from __future__ import annotations

import json
from typing import IO, Any

from kvmsim.hw.vmcs import exit_reason_name
from kvmsim.kvm.trace import format_event
from kvmsim.probe import Event
from kvmsim.trace.events import CLOCK, RunInfo

TID_GUEST, TID_EXIT, TID_KERNEL, TID_VMM = 1, 2, 3, 4
TRACKS = {TID_GUEST: "vCPU 0: guest", TID_EXIT: "vCPU 0: exit handling", TID_KERNEL: "vCPU 0: KVM (kernel)",
          TID_VMM: "VMM (userspace)"}
IOCTL = "kvm_arch_vcpu_ioctl_run"


def _us(ns: int) -> float:
    return ns / 1000.0


def _args(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in fields.items()}


class PerfettoWriter:
    """Consumer: streams trace events to `out` as {"traceEvents": [...], ...}."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.count = 0
        self._pid = 0
        self._first = True
        out.write('{"displayTimeUnit":"ns","otherData":{"clock":' + json.dumps(CLOCK) + '},"traceEvents":[\n')

    def _emit(self, ev: dict[str, Any]) -> None:
        self.out.write(("" if self._first else ",\n") + json.dumps(ev, separators=(",", ":"), default=str))
        self._first = False
        self.count += 1

    def begin_run(self, run: RunInfo) -> None:
        self._pid += 1
        self._emit({"name": "process_name", "ph": "M", "pid": self._pid, "tid": 0,
                    "args": {"name": f"kvmsim {run.scenario} [{run.backend}]"}})
        for tid, name in TRACKS.items():
            self._emit({"name": "thread_name", "ph": "M", "pid": self._pid, "tid": tid, "args": {"name": name}})
            self._emit({"name": "thread_sort_index", "ph": "M", "pid": self._pid, "tid": tid,
                        "args": {"sort_index": tid}})
        self._entry: int | None = None
        self._exit: tuple[int, str, dict] | None = None
        self._vmm: tuple[int, str] | None = None
        self._open = 0
        self._last = 0
        self._ioctl_depth = 0
        self._user_reason = "KVM_RUN returned"

    def _x(self, tid: int, name: str, start: int, end: int, args: dict | None = None) -> None:
        ev = {"name": name, "ph": "X", "pid": self._pid, "tid": tid, "ts": _us(start), "dur": _us(max(end - start, 0))}
        if args:
            ev["args"] = args
        self._emit(ev)

    def feed(self, ev: Event, ts: int) -> None:
        self._last = ts
        kind, name = ev.kind, ev.name
        if kind == "call":
            if name == IOCTL and self._vmm is not None:
                self._x(TID_VMM, self._vmm[1], self._vmm[0], ts)
                self._vmm = None
            self._emit({"name": name, "ph": "B", "pid": self._pid, "tid": TID_KERNEL, "ts": _us(ts),
                        "args": _args(ev.fields)} if ev.fields else
                       {"name": name, "ph": "B", "pid": self._pid, "tid": TID_KERNEL, "ts": _us(ts)})
            self._open += 1
        elif kind == "ret":
            if self._open:
                self._emit({"name": name, "ph": "E", "pid": self._pid, "tid": TID_KERNEL, "ts": _us(ts)})
                self._open -= 1
            if name == IOCTL:
                self._vmm = (ts, self._user_reason)
                self._user_reason = "KVM_RUN returned"
        else:
            f = ev.fields
            self._emit({"name": name, "ph": "i", "s": "t", "pid": self._pid, "tid": TID_KERNEL, "ts": _us(ts),
                        "args": _args({k: v for k, v in f.items()})})
            if name == "kvm_entry":
                if self._exit is not None:
                    self._x(TID_EXIT, self._exit[1], self._exit[0], ts, self._exit[2])
                    self._exit = None
                self._entry = ts
            elif name == "kvm_exit":
                if self._entry is not None:
                    self._x(TID_GUEST, "guest", self._entry, ts)
                    self._entry = None
                reason = exit_reason_name(f.get("exit_reason", 0))
                self._exit = (ts, reason, {"exit_reason": reason, "guest_rip": hex(f.get("guest_rip", 0)),
                                           "intr_info": hex(f.get("intr_info", 0))})
            elif name == "kvm_userspace_exit":
                self._user_reason = format_event(name, f)     # "reason KVM_EXIT_IO (2)", as trace.h prints it

    def end_run(self, run: RunInfo) -> None:
        """Close what the run left open, so every B has its E and the last exit shows."""
        end = self._last
        if self._exit is not None:
            self._x(TID_EXIT, self._exit[1], self._exit[0], end, {**self._exit[2], "note": "the run stopped here"})
        if self._vmm is not None:
            self._x(TID_VMM, self._vmm[1] + " (run stopped)", self._vmm[0], end)
        for _ in range(self._open):
            self._emit({"ph": "E", "pid": self._pid, "tid": TID_KERNEL, "ts": _us(end)})
        self._open = 0
        self._exit = self._vmm = None

    def close(self) -> None:
        self.out.write("\n]}\n")
        self.out.flush()


# ---------------------------------------------------------------- chart

def chart_available() -> tuple[bool, str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False, "matplotlib is not installed (pip install 'kvmsim[chart]')"
    return True, ""


def census_chart(census: dict[str, Any], path: str) -> None:
    """Two bar charts side by side: VM exits by reason, emulations by EMULTYPE combination.
    SVG or PNG by the file's suffix; the bars' values come straight from the census dict."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exits = census["exits"]
    emul = census["by_emultype_combination"]
    plt.rcParams["svg.fonttype"] = "none"   # labels stay <text>, so the SVG can be read back
    plt.rcParams["svg.hashsalt"] = "kvmsim"  # deterministic ids
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, data, title in ((a, exits, "VM exits by reason"), (b, emul, "x86_emulate_instruction by EMULTYPE")):
        keys = list(data)[::-1]
        vals = [data[k] for k in keys]
        bars = ax.barh(keys or ["(none)"], vals or [0], color="#4878a8")
        ax.bar_label(bars, labels=[str(v) for v in vals] or ["0"], padding=2, fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("count")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle("kvmsim census: " + ", ".join(census["runs"]), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None} if path.endswith(".svg") else None)
    plt.close(fig)
