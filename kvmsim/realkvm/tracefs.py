"""Read the real kernel's kvm tracepoints (arch/x86/kvm/trace.h, include/trace/events/kvm.h) via tracefs.

A `KvmTrace` uses a private ftrace instance (instances/kvmsim-<pid>), filtered to this process,
so it neither sees nor disturbs anyone else's tracing; closing it disables its events and
removes the instance.  Nothing stays enabled.  If tracefs is not mounted we mount it at
/sys/kernel/tracing (its standard place) and leave it mounted: unmounting could pull it
from under a concurrent session, and a mounted, idle tracefs costs nothing.

    trace, why = open_trace()
    if trace is None: skip(why)
    with trace:
        ... vcpu.run() ...
    for ev in trace.events: ev["event"], ev["fields"]
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Iterable

DEFAULT_EVENTS = ("kvm_exit", "kvm_entry", "kvm_emulate_insn", "kvm_mmio", "kvm_pio", "kvm_userspace_exit")
_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

# "  python-1234    [001] d..1.  123.456789: kvm_exit: vcpu 0 reason ..."
_LINE = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                   r"(?:(?P<flags>\S{4,6})\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s(?P<msg>.*)$")

# TP_printk formats (reference §11), as regexes over the message part.
_FORMATS: dict[str, re.Pattern[str]] = {
    "kvm_exit": re.compile(r"vcpu (?P<vcpu_id>\d+) reason (?P<reason>\S+)(?P<reason_flags>.*?) "
                           r"rip 0x(?P<guest_rip>[0-9a-f]+) info1 0x(?P<info1>[0-9a-f]+) "
                           r"info2 0x(?P<info2>[0-9a-f]+) intr_info 0x(?P<intr_info>[0-9a-f]+) "
                           r"error_code 0x(?P<error_code>[0-9a-f]+)"),
    "kvm_entry": re.compile(r"vcpu (?P<vcpu_id>\d+), rip 0x(?P<rip>[0-9a-f]+)(?P<immediate_exit> \[immediate exit\])?"),
    "kvm_emulate_insn": re.compile(r"(?P<csbase>[0-9a-f]+):(?P<rip>[0-9a-f]+):(?P<insn>[0-9a-f ]*?)\s*"
                                   r"\((?P<mode>\w+)\)(?P<failed> failed)?$"),
    "kvm_mmio": re.compile(r"mmio (?P<type>[\w-]+) len (?P<len>\d+) gpa 0x(?P<gpa>[0-9a-f]+) val 0x(?P<val>[0-9a-f]+)"),
    "kvm_pio": re.compile(r"pio_(?P<rw>read|write) at 0x(?P<port>[0-9a-f]+) size (?P<size>\d+) "
                          r"count (?P<count>\d+) val 0x(?P<val>[0-9a-f]+)(?P<more> \(\.\.\.\))?"),
    "kvm_userspace_exit": re.compile(r"reason (?P<reason>\S+) \((?P<errno>-?\d+)\)"),
}
_HEX_FIELDS = {"guest_rip", "info1", "info2", "intr_info", "error_code", "rip", "csbase", "gpa", "val", "port"}
_INT_FIELDS = {"vcpu_id", "len", "size", "count", "errno"}


def parse_line(line: str) -> dict | None:
    """One trace line → {comm, pid, cpu, ts, event, msg, fields}; None for comments/garbage."""
    m = _LINE.match(line)
    if not m:
        return None
    d: dict = {"comm": m["comm"], "pid": int(m["pid"]), "cpu": int(m["cpu"]), "ts": float(m["ts"]),
               "event": m["event"], "msg": m["msg"], "fields": {}}
    fmt = _FORMATS.get(m["event"])
    fm = fmt.search(m["msg"]) if fmt else None
    if fm:
        f: dict = {}
        for k, v in fm.groupdict().items():
            if k in _HEX_FIELDS:
                f[k] = int(v, 16)
            elif k in _INT_FIELDS:
                f[k] = int(v)
            elif k in ("immediate_exit", "failed", "more"):
                f[k] = v is not None
            elif k == "insn":
                f[k] = bytes.fromhex(v.replace(" ", ""))
            else:
                f[k] = v.strip() if isinstance(v, str) else v
        d["fields"] = f
    return d


def parse_trace(text: str) -> list[dict]:
    return [d for line in text.splitlines() if not line.startswith("#") and (d := parse_line(line))]


def _find_tracefs() -> tuple[Path | None, bool, str]:
    """(tracefs root, we mounted it, reason if none)."""
    for p in _CANDIDATES:
        if (p / "instances").is_dir():
            return p, False, ""
    target = _CANDIDATES[0]
    if os.geteuid() != 0:
        return None, False, "tracefs is not mounted and we are not root"
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], capture_output=True, text=True)
    if r.returncode != 0 or not (target / "instances").is_dir():
        return None, False, f"cannot mount tracefs on {target}: {r.stderr.strip() or r.returncode}"
    return target, True, ""


class KvmTrace:
    """An ftrace instance with some kvm:* events enabled for this process only."""

    def __init__(self, root: Path, mounted: bool, events: Iterable[str]) -> None:
        self.root, self._mounted = root, mounted
        self.names = tuple(events)
        self.dir = root / "instances" / f"kvmsim-{os.getpid()}-{threading.get_native_id()}"
        self.events: list[dict] = []
        self.raw = ""
        self._open = False

    def _w(self, rel: str, value: str) -> None:
        (self.dir / rel).write_text(value)

    def start(self) -> None:
        self.dir.mkdir()
        self._open = True
        pids = {os.getpid(), threading.get_native_id()}
        self._w("set_event_pid", " ".join(map(str, sorted(pids))))
        self._w("buffer_size_kb", "4096")
        for name in self.names:
            self._w(f"events/kvm/{name}/enable", "1")
        self._w("tracing_on", "1")

    def stop(self) -> list[dict]:
        """Disable everything, read the buffer, remove the instance; returns the parsed events."""
        if not self._open:
            return self.events
        try:
            self._w("tracing_on", "0")
            for name in self.names:
                self._w(f"events/kvm/{name}/enable", "0")
            self.raw = (self.dir / "trace").read_text()
            self.events = parse_trace(self.raw)
        finally:
            self._open = False
            self.dir.rmdir()
        return self.events

    def __enter__(self) -> "KvmTrace":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def of(self, event: str) -> list[dict]:
        return [e for e in self.events if e["event"] == event]


def open_trace(events: Iterable[str] = DEFAULT_EVENTS) -> tuple[KvmTrace | None, str]:
    """A KvmTrace ready to start, or (None, why tracing is unavailable)."""
    root, mounted, why = _find_tracefs()
    if root is None:
        return None, why
    missing = [e for e in events if not (root / "events" / "kvm" / e).is_dir()]
    if missing:
        return None, f"kvm tracepoints missing from {root}/events/kvm: {', '.join(missing)}"
    return KvmTrace(root, mounted, events), ""
