"""The real kernel's kvm tracepoints during one run, summarised for `kvmsim run --backend kvm`.

Reads kvm:kvm_exit, kvm_emulate_insn, kvm_mmio, kvm_pio and kvm_userspace_exit through tracefs
(tracefs.open_trace: a private instance filtered to this process) and reduces them to counts:

    {"source": "tracefs", "module": "kvm_pvm",
     "counts":            {"kvm_emulate_insn": 2002, "kvm_exit": 0, "kvm_mmio": 0, ...},
     "emulate_insn_modes": {"prot64": 2002},  # TP_printk mode of kvm_emulate_insn
     "emulate_insn_failed": 0,
     "exit_reasons":       {"IO_INSTRUCTION": 5},   # kvm_exit reason (VMX/SVM names)
     "pio":                {"write 0x3f8 size 1": 18, ...},
     "mmio":               {"read len 4": 2, ...},   # kvm_mmio type, len
     "userspace_exits":    {"KVM_EXIT_IO": 37, ...}} # kvm_userspace_exit reason

or {"source": "none", "module": ..., "unavailable": "why"} where tracefs cannot be used.
These are host facts, never compared by `diff` (a vendor's exits are not the model's).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from kvmsim.realkvm.backend import vendor_module
from kvmsim.realkvm.tracefs import DEFAULT_EVENTS, KvmTrace, open_trace

EVENTS = tuple(e for e in DEFAULT_EVENTS if e != "kvm_entry")  # kvm_entry adds nothing to a summary


class HostEventRecorder:
    """Context manager: `with HostEventRecorder() as rec: run...`; then `rec.summary`."""

    def __init__(self, events: Iterable[str] = EVENTS) -> None:
        self.events = tuple(events)
        self._trace: KvmTrace | None = None
        self.summary: dict[str, Any] = {}

    def __enter__(self) -> "HostEventRecorder":
        trace, why = open_trace(self.events)
        if trace is None:
            self.summary = unavailable(why)
            return self
        try:
            trace.start()
        except OSError as e:
            self.summary = unavailable(f"cannot start a tracefs instance: {e.strerror or e}")
            return self
        self._trace = trace
        return self

    def __exit__(self, *exc: object) -> None:
        if self._trace is None:
            return
        trace, self._trace = self._trace, None
        try:
            events = trace.stop()
        except OSError as e:
            self.summary = unavailable(f"cannot read the tracefs instance: {e.strerror or e}")
            return
        self.summary = summarise(events, self.events)


def unavailable(why: str) -> dict[str, Any]:
    return {"source": "none", "module": vendor_module(), "unavailable": why}


def summarise(events: list[dict], names: Iterable[str] = EVENTS) -> dict[str, Any]:
    """Parsed tracefs events (tracefs.parse_trace) → the count summary in the module docstring."""
    counts = Counter({n: 0 for n in names})
    modes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    pio: Counter[str] = Counter()
    mmio: Counter[str] = Counter()
    user: Counter[str] = Counter()
    failed = 0
    for ev in events:
        name, f = ev["event"], ev.get("fields", {})
        counts[name] += 1
        if name == "kvm_emulate_insn" and f:
            modes[f["mode"]] += 1
            failed += bool(f.get("failed"))
        elif name == "kvm_exit" and f:
            reasons[f["reason"]] += 1
        elif name == "kvm_pio" and f:
            pio[f"{f['rw']} {f['port']:#x} size {f['size']}"] += 1
        elif name == "kvm_mmio" and f:
            mmio[f"{f['type']} len {f['len']}"] += 1
        elif name == "kvm_userspace_exit" and f:
            r = f["reason"]
            user[r if r.startswith("KVM_EXIT_") else f"KVM_EXIT_{r}"] += 1
    return {"source": "tracefs", "module": vendor_module(), "counts": dict(sorted(counts.items())),
            "emulate_insn_modes": dict(sorted(modes.items())), "emulate_insn_failed": failed,
            "exit_reasons": dict(sorted(reasons.items())), "pio": dict(sorted(pio.items())),
            "mmio": dict(sorted(mmio.items())), "userspace_exits": dict(sorted(user.items()))}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The human lines `kvmsim run --backend kvm` prints under "host kvm events"."""
    if summary.get("source") != "tracefs":
        return [f"unavailable: {summary.get('unavailable', 'not recorded')}"]
    out = ["events: " + ", ".join(f"{k}={n}" for k, n in summary["counts"].items())]
    for key, label in (("emulate_insn_modes", "kvm_emulate_insn by mode"), ("exit_reasons", "kvm_exit by reason"),
                       ("pio", "kvm_pio"), ("mmio", "kvm_mmio"), ("userspace_exits", "kvm_userspace_exit")):
        if summary.get(key):
            out.append(f"{label}: " + ", ".join(f"{k}={n}" for k, n in summary[key].items()))
    if summary.get("emulate_insn_failed"):
        out.append(f"kvm_emulate_insn failed: {summary['emulate_insn_failed']}")
    return out
