"""What one run of a scenario produced (sim or the real /dev/kvm): the runner fills a RunResult.

The exit records inside it (`UserspaceExit`, `Stop`) are the VMM's: vmm/exits.py.  `to_json()` is
deterministic: top-level keys in declaration order, every mapping inside sorted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields as dc_fields
from typing import Any, Iterable, TextIO

from kvmsim.vmm.exits import Stop, UserspaceExit


@dataclass
class RunResult:
    """Everything a run observed; compared against `expect` (expect.py) and across backends (`diff`)."""

    scenario: str
    backend: str                                                 # "sim" | "kvm"
    stop: Stop
    exits: dict[str, int] = field(default_factory=dict)          # VMX EXIT_REASON name -> count
    userspace: list[UserspaceExit] = field(default_factory=list)  # in order; see userspace_omitted
    # A bounded exit log (runner.DEFAULT_KEEP_EXITS) keeps the first and last exits: this many more
    # happened between userspace[userspace_omitted_at - 1] and userspace[userspace_omitted_at].
    userspace_omitted: int = 0
    userspace_omitted_at: int = 0
    emulation: dict[str, int] = field(default_factory=dict)      # EMULTYPE key ("PF", "0", ...) -> calls
    serial: str = ""
    regs: dict[str, int] = field(default_factory=dict)           # struct kvm_regs names, final values
    sregs: dict[str, int] = field(default_factory=dict)          # cr0 cr2 cr3 cr4 cr8 efer apic_base
    devices: dict[str, dict[str, int]] = field(default_factory=dict)  # device name -> counters
    exceptions: list[dict[str, int]] = field(default_factory=list)    # injected: {vector, error_code?}
    memory: list[dict[str, Any]] = field(default_factory=list)   # {gpa, bytes: hex}: expect.memory ranges
    dirty_log: dict[int, list[int]] = field(default_factory=dict)  # log_dirty memslot -> dirty page GPAs
    guest_insns: int | None = None
    wall_seconds: float | None = None                            # not compared by `diff`
    trace: list[Any] | None = None                               # only with --trace
    host_events: dict[str, Any] | None = None                    # kvm backend: real kvm:* tracepoint counts

    @property
    def userspace_count(self) -> int:
        """Every exit to userspace in the run, kept or omitted."""
        return len(self.userspace) + self.userspace_omitted

    def userspace_marker(self) -> str:
        return f"… {self.userspace_omitted} exits omitted"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dc_fields(self)}
        d["stop"] = asdict(self.stop)
        d["userspace"] = [u.to_dict() for u in self.userspace]
        if self.userspace_omitted:   # the marker sits where the records are missing
            d["userspace"].insert(self.userspace_omitted_at, {"omitted": self.userspace_omitted})
        d["userspace_count"] = self.userspace_count
        for k in ("exits", "emulation", "regs", "sregs"):
            d[k] = dict(sorted(d[k].items()))
        d["devices"] = {n: dict(sorted(c.items())) for n, c in sorted(self.devices.items())}
        d["exceptions"] = [dict(sorted(e.items())) for e in self.exceptions]
        d["memory"] = [dict(sorted(m.items())) for m in self.memory]
        if self.host_events is not None:
            d["host_events"] = _sorted_deep(self.host_events)
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        kw = {f.name: d[f.name] for f in dc_fields(cls) if f.name in d}
        kw["stop"] = Stop(**d["stop"])
        kw["userspace"] = [UserspaceExit.from_dict(u) for u in d.get("userspace", []) if "omitted" not in u]
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        return cls.from_dict(json.loads(text))


class ExitStream:
    """`kvmsim run --exits-jsonl FILE`: every userspace exit of every run as JSON Lines, written
    while the run goes (the exit log in memory stays bounded).  Three kinds of line, told apart
    by their first key (README, "The exit log as JSON Lines"):

      {"scenario": NAME, "file": PATH, "backend": "sim"}          a run starts
      {"n": 1, "reason": "MMIO", "fields": {...}}                  one exit: UserspaceExit.to_dict() and its number
      {"end": {"scenario": NAME, "userspace_count": N, "stop": {...}}}   the run ended; N exit lines came before
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0
        self._encode = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode

    def begin(self, scenario: str, file: str | None, backend: str) -> None:
        self.count = 0
        self.out.write(self._encode({"scenario": scenario, "file": file, "backend": backend}) + "\n")

    def write(self, records: list[UserspaceExit]) -> None:
        """Vmm's exit_sink: the next records, in order."""
        encode, n = self._encode, self.count
        lines = []
        for rec in records:
            n += 1
            lines.append(encode({"n": n, "reason": rec.reason, "fields": rec.fields}))
        self.count = n
        lines.append("")
        self.out.write("\n".join(lines))

    def end(self, result: "RunResult") -> None:
        self.out.write(self._encode({"end": {"scenario": result.scenario, "userspace_count": result.userspace_count,
                                             "stop": asdict(result.stop)}}) + "\n")
        self.out.flush()


def read_exit_stream(lines: Iterable[str]) -> list[tuple[dict[str, Any], list[UserspaceExit], dict[str, Any] | None]]:
    """Parse --exits-jsonl output back: (run header, its exits, its end object or None) per run."""
    runs: list[tuple[dict[str, Any], list[UserspaceExit], dict[str, Any] | None]] = []
    for line in lines:
        if not line.strip():
            continue
        obj = json.loads(line)
        if "scenario" in obj:
            runs.append((obj, [], None))
        elif "n" in obj:
            runs[-1][1].append(UserspaceExit.from_dict(obj))
        else:
            header, exits, _ = runs[-1]
            runs[-1] = (header, exits, obj["end"])
    return runs


def _sorted_deep(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sorted_deep(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [_sorted_deep(x) for x in v]
    return v


def _json_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).hex()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


# ---------------------------------------------------------------- sim vs kvm

NOT_COMPARED = ("scenario", "backend", "trace", "wall_seconds", "host_events")
# What sim and /dev/kvm must agree on (`kvmsim diff`): what userspace and the guest can observe.
BACKEND_AGREED = ("stop.reason", "stop.code", "stop.suberror", "userspace", "serial", "regs", "memory", "devices",
                  "dirty_log")
# Model facts only the simulation reports (VMX exit and EMULTYPE counts, injected exceptions).
SIM_ONLY = ("exits", "emulation", "exceptions", "guest_insns")


def _flatten(v: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            _flatten(x, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(v, list):
        out[f"{prefix}.len"] = len(v)
        for i, x in enumerate(v):
            _flatten(x, f"{prefix}.{i}", out)
    else:
        out[prefix] = v


def diff_results(a: RunResult, b: RunResult, ignore: list[str] | tuple[str, ...] = (),
                 only: tuple[str, ...] | None = None) -> list[str]:
    """Differences between two results as `path: a_value != b_value` lines.

    `ignore` holds dotted paths (a scenario's host_dependent): `regs.rbx` skips that register,
    `regs` skips all of them.  Userspace exits flatten as `userspace.<i>.fields.<name>`.
    `only` (dotted prefixes, e.g. BACKEND_AGREED) limits the comparison to those fields.
    """
    return [f"{p}: {_show(va)} != {_show(vb)}" for p, va, vb in diff_paths(a, b, ignore, only)]


def path_under(path: str, prefixes: list[str] | tuple[str, ...]) -> bool:
    """`regs.rbx` is under `regs` and under `regs.rbx`, not under `regs.rb`."""
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def diff_paths(a: RunResult, b: RunResult, ignore: list[str] | tuple[str, ...] = (),
               only: tuple[str, ...] | None = None) -> list[tuple[str, Any, Any]]:
    """(path, a value, b value) for every flattened field that differs, in natural path order;
    a value missing on one side is the string '<absent>'."""
    fa: dict[str, Any] = {}
    fb: dict[str, Any] = {}
    da, db = a.to_dict(), b.to_dict()
    for k in NOT_COMPARED:
        da.pop(k, None), db.pop(k, None)
    _flatten(da, "", fa)
    _flatten(db, "", fb)

    out = []
    for p in sorted(set(fa) | set(fb), key=lambda s: [(0, int(x)) if x.isdigit() else (1, x) for x in s.split(".")]):
        if path_under(p, ignore) or (only is not None and not path_under(p, only)):
            continue
        va, vb = fa.get(p, "<absent>"), fb.get(p, "<absent>")
        if va != vb:
            out.append((p, va, vb))
    return out


def _show(v: Any) -> str:
    return hex(v) if isinstance(v, int) and not isinstance(v, bool) and v > 9 else repr(v)
