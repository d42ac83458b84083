"""Compare a RunResult with a scenario's `expect` section: one Check per section, with a readable diff."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from kvmsim.scenario.result import RunResult
from kvmsim.scenario.schema import Expect, ExpectUserspaceExit, Scenario, emultype_key
from kvmsim.vmm.exits import HEX_FIELDS, UserspaceExit

CONTEXT = 2  # records shown either side of the first userspace difference


@dataclass
class Check:
    """One expectation: `diff` says what differs (empty when it passed)."""

    name: str
    passed: bool
    expected: Any
    actual: Any
    diff: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "expected": _jsonable(self.expected),
                "actual": _jsonable(self.actual), "diff": self.diff}


def _jsonable(v: Any) -> Any:
    if isinstance(v, UserspaceExit):
        return v.to_dict()
    if hasattr(v, "model_dump"):
        return v.model_dump(exclude_none=True)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def check(scenario: Scenario, result: RunResult) -> list[Check]:
    """Every expectation the scenario states, in the order of the Expect model's fields."""
    e: Expect = scenario.expect
    out: list[Check] = []
    for name, fn in CHECKERS.items():
        if getattr(e, name) is not None:
            out.append(fn(e, result))
    return out


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.passed]


# ---------------------------------------------------------------- simple sections

def _h(v: Any) -> str:
    return hex(v) if isinstance(v, int) and not isinstance(v, bool) else repr(v)


def check_stop(e: Expect, r: RunResult) -> Check:
    want, got = e.stop, r.stop
    suberror = got.suberror
    if suberror is None:
        internal = [u for u in r.userspace if u.reason == "INTERNAL_ERROR"]
        suberror = internal[-1].fields.get("suberror") if internal else None
    lines = []
    if want.reason != got.reason:
        lines.append(f"reason: expected {want.reason}, got {got.reason}")
    if want.code is not None and want.code != got.code:
        lines.append(f"code: expected {_h(want.code)}, got {_h(got.code)}")
    if want.suberror is not None and want.suberror != suberror:
        lines.append(f"suberror: expected {want.suberror}, got {suberror}")
    if lines and got.detail:
        lines.append(f"(stop detail: {got.detail})")
    actual = {"reason": got.reason, "code": got.code, "suberror": suberror, "detail": got.detail}
    return Check("stop", not lines, want.model_dump(exclude_none=True), actual, "\n".join(lines))


def _counts(name: str, want: dict[str, int], got: dict[str, int], what: str) -> Check:
    lines = [f"{k}: expected {n}, got {got.get(k, 0)}" for k, n in want.items() if got.get(k, 0) != n]
    if lines:
        others = {k: n for k, n in sorted(got.items()) if k not in want and n}
        if others:
            lines.append(f"(other {what}: " + ", ".join(f"{k}={n}" for k, n in others.items()) + ")")
    return Check(name, not lines, dict(want), {k: got.get(k, 0) for k in want}, "\n".join(lines))


def check_exits(e: Expect, r: RunResult) -> Check:
    got = {k.upper().removeprefix("EXIT_REASON_"): n for k, n in r.exits.items()}
    return _counts("exits", e.exits, got, "exits")


def _emul_key(k: str) -> str:
    try:
        return emultype_key(k)
    except ValueError:
        return k


def check_emulation(e: Expect, r: RunResult) -> Check:
    got: dict[str, int] = {}
    for k, n in r.emulation.items():
        got[_emul_key(k)] = got.get(_emul_key(k), 0) + n
    return _counts("emulation", e.emulation, got, "emulation types")


def check_serial(e: Expect, r: RunResult) -> Check:
    if e.serial == r.serial:
        return Check("serial", True, e.serial, r.serial)
    if e.serial.rstrip("\n") == r.serial.rstrip("\n"):
        diff = f"only trailing newlines differ: expected {e.serial!r}, got {r.serial!r}"
    else:
        diff = "\n".join(difflib.unified_diff(e.serial.splitlines(), r.serial.splitlines(),
                                              "expected serial", "actual serial", n=2, lineterm=""))
    return Check("serial", False, e.serial, r.serial, diff)


def check_serial_contains(e: Expect, r: RunResult) -> Check:
    ok = e.serial_contains in r.serial
    tail = r.serial if len(r.serial) <= 400 else "..." + r.serial[-400:]
    return Check("serial_contains", ok, e.serial_contains, r.serial,
                 "" if ok else f"{e.serial_contains!r} not found in serial output:\n{tail}")


def check_regs(e: Expect, r: RunResult) -> Check:
    have = {**r.sregs, **r.regs}
    lines = [f"{k}: expected {v:#x}, got {_h(have.get(k))}" for k, v in e.regs.items() if have.get(k) != v]
    return Check("regs", not lines, dict(e.regs), {k: have.get(k) for k in e.regs}, "\n".join(lines))


def _read_memory(r: RunResult, gpa: int, n: int) -> str | None:
    for m in r.memory:
        start, data = int(m["gpa"]), bytes.fromhex(m["bytes"])
        if start <= gpa and gpa + n <= start + len(data):
            return data[gpa - start: gpa - start + n].hex()
    return None


def check_memory(e: Expect, r: RunResult) -> Check:
    lines, actual = [], []
    for m in e.memory:
        got = _read_memory(r, m.gpa, len(m.bytes) // 2)
        actual.append({"gpa": m.gpa, "bytes": got})
        if got is None:
            lines.append(f"{m.gpa:#x}: not captured by the runner")
        elif got != m.bytes:
            lines.append(f"{m.gpa:#x}: expected {m.bytes}, got {got}")
    return Check("memory", not lines, [m.model_dump() for m in e.memory], actual, "\n".join(lines))


def check_devices(e: Expect, r: RunResult) -> Check:
    lines, actual = [], {}
    for dev, counters in e.devices.items():
        have = r.devices.get(dev, {})
        actual[dev] = {c: have.get(c) for c in counters}
        lines += [f"{dev}.{c}: expected {v}, got {have.get(c)}" for c, v in counters.items() if have.get(c) != v]
    return Check("devices", not lines, e.devices, actual, "\n".join(lines))


def check_exceptions(e: Expect, r: RunResult) -> Check:
    want = [x.model_dump(exclude_none=True) for x in e.exceptions]
    ok = len(want) == len(r.exceptions) and all(
        all(got.get(k) == v for k, v in w.items()) for w, got in zip(want, r.exceptions))
    diff = "" if ok else f"expected {want}\n  actual {r.exceptions}"
    return Check("exceptions", ok, want, r.exceptions, diff)


def check_dirty_log(e: Expect, r: RunResult) -> Check:
    want = {slot: sorted(gpas) for slot, gpas in e.dirty_log.items()}
    got = {slot: r.dirty_log.get(slot) for slot in want}
    lines = [f"slot {s}: expected pages {[hex(g) for g in w]}, got {[hex(g) for g in got[s]] if got[s] is not None else None}"
             for s, w in want.items() if got[s] != w]
    return Check("dirty_log", not lines, want, got, "\n".join(lines))


# ---------------------------------------------------------------- the userspace exit stream

# expect key -> (KVM_EXIT_* reason, {expect field: kvm_run field})
USERSPACE_MAP: dict[str, tuple[str, dict[str, str]]] = {
    "io":        ("IO",             {"port": "port", "size": "size", "direction": "direction",
                                     "count": "count", "data": "data"}),
    "mmio":      ("MMIO",           {"gpa": "phys_addr", "len": "len", "write": "is_write", "data": "data"}),
    "hlt":       ("HLT",            {}),
    "shutdown":  ("SHUTDOWN",       {}),
    "internal":  ("INTERNAL_ERROR", {"suberror": "suberror", "ndata": "ndata", "data": "data"}),
    "rdmsr":     ("X86_RDMSR",      {"index": "index"}),
    "wrmsr":     ("X86_WRMSR",      {"index": "index", "data": "data"}),
    "hypercall": ("HYPERCALL",      {"nr": "nr"}),
    "irq_window_open": ("IRQ_WINDOW_OPEN", {"if_flag": "if_flag", "ready": "ready_for_interrupt_injection"}),
    "debug":     ("DEBUG",          {"exception": "exception", "pc": "pc", "dr6": "dr6", "dr7": "dr7"}),
}


def _same(key: str, want: Any, got: Any) -> bool:
    if key == "direction":
        return {"in": 0, "out": 1}.get(want, want) == ({"in": 0, "out": 1}.get(got, got))
    if key in ("write", "is_write"):
        return bool(want) == bool(got)
    if key == "data" and isinstance(got, (bytes, bytearray)):
        got = bytes(got).hex()
    if key == "data" and isinstance(got, str):
        got = got.replace(" ", "").lower()
        if isinstance(want, int):
            return got != "" and want == int.from_bytes(bytes.fromhex(got), "little")
    if key == "data" and isinstance(want, str) and isinstance(got, int):
        return int.from_bytes(bytes.fromhex(want), "little") == got
    return want == got


def mismatches(want: ExpectUserspaceExit, got: UserspaceExit) -> list[str]:
    """Why `got` does not match `want` (empty when it does)."""
    reason, names = USERSPACE_MAP[want.kind]
    if got.reason != reason:
        return [f"exit reason: expected KVM_EXIT_{reason}, got {got.kname}"]
    out = []
    for k, v in want.fields.items():
        field = names[k]
        if not _same(field, v, got.fields.get(field)):
            out.append(f"{field}: expected {_fmt_want(k, v)}, got {_fmt_got(field, got.fields.get(field))}")
    return out


_HEX_WANT = frozenset({"gpa", "port", "index", "nr", "data"})


def _fmt_want(k: str, v: Any) -> str:
    if isinstance(v, bool) or k == "direction":
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(map(_h, v)) + "]"
    if isinstance(v, str):
        return v
    return hex(v) if k in _HEX_WANT else str(v)


def _fmt_got(field: str, v: Any) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(_h, v)) + "]"
    if isinstance(v, str) or isinstance(v, bool):
        return str(v)
    return hex(v) if field in HEX_FIELDS or field == "data" else str(v)


def describe_want(w: ExpectUserspaceExit) -> str:
    """`mmio gpa=0xd0000000 len=4 write=false` (the expectation as written)."""
    return " ".join([w.kind] + [f"{k}={_fmt_want(k, v)}" for k, v in w.fields.items()])


def _side_by_side(want: list[ExpectUserspaceExit], got: list[UserspaceExit], at: int, at_got: int | None = None) -> str:
    at_got = at if at_got is None else at_got
    rows = []
    lo_w, lo_g = max(0, at - CONTEXT), max(0, at_got - CONTEXT)
    for i in range(CONTEXT * 2 + 1):
        wi, gi = lo_w + i, lo_g + i
        if wi > at + CONTEXT and gi > at_got + CONTEXT:
            break
        w = f"#{wi + 1} {describe_want(want[wi])}" if wi < len(want) and wi <= at + CONTEXT else ""
        g = f"#{gi + 1} {got[gi].describe()}" if gi < len(got) and gi <= at_got + CONTEXT else ""
        if not w and not g:
            continue
        mark = ">" if wi == at else " "
        rows.append((mark, w, g))
    width = max([len("expected")] + [len(w) for _, w, _ in rows])
    lines = [f"  {'expected':<{width}} | actual"] + [f"{m} {w:<{width}} | {g}" for m, w, g in rows]
    return "\n".join(lines)


def check_userspace(e: Expect, r: RunResult) -> Check:
    want, got, mode = e.userspace, r.userspace, e.userspace_mode
    name = "userspace" if mode == "exact" else f"userspace ({mode})"
    expected = [w.model_dump(exclude_none=True, exclude_unset=True) for w in want]
    if mode == "subsequence":
        j = 0
        for i, w in enumerate(want):
            while j < len(got) and mismatches(w, got[j]):
                j += 1
            if j == len(got):
                start = _last_match_index(want[:i], got) + 1
                diff = (f"expected exit #{i + 1} ({describe_want(w)}) not found after actual exit #{start} "
                        f"(of {len(got)})\n" + _side_by_side(want, got, i, min(start, max(len(got) - 1, 0))))
                return Check(name, False, expected, got, diff)
            j += 1
        return Check(name, True, expected, got)
    for i, w in enumerate(want):
        if i >= len(got):
            diff = (f"expected {len(want)} exits, got {len(got)}: exit #{i + 1} missing\n"
                    + _side_by_side(want, got, i))
            return Check(name, False, expected, got, diff)
        if why := mismatches(w, got[i]):
            diff = (f"exit #{i + 1} differs: " + "; ".join(why) + "\n" + _side_by_side(want, got, i))
            return Check(name, False, expected, got, diff)
    if mode == "exact" and len(got) > len(want):
        i = len(want)
        diff = (f"expected {len(want)} exits, got {len(got)}: unexpected exit #{i + 1} {got[i].describe()}\n"
                + _side_by_side(want, got, i))
        return Check(name, False, expected, got, diff)
    return Check(name, True, expected, got)


def _last_match_index(want: list[ExpectUserspaceExit], got: list[UserspaceExit]) -> int:
    """0-based index in `got` where the greedy subsequence match of `want` ended (-1 if empty)."""
    j = -1
    for w in want:
        j += 1
        while j < len(got) and mismatches(w, got[j]):
            j += 1
    return j


CHECKERS: dict[str, Callable[[Expect, RunResult], Check]] = {
    "stop":            check_stop,
    "exits":           check_exits,
    "userspace":       check_userspace,
    "emulation":       check_emulation,
    "serial":          check_serial,
    "serial_contains": check_serial_contains,
    "regs":            check_regs,
    "memory":          check_memory,
    "devices":         check_devices,
    "exceptions":      check_exceptions,
    "dirty_log":       check_dirty_log,
}


# ---------------------------------------------------------------- a run with no stated stop

NORMAL_STOP = "stop (implicit)"


def check_normal_stop(r: RunResult) -> Check:
    """Without `expect.stop`, a run passes only if the guest stopped the way a guest normally does:
    a debug-exit write of 0, an isa-debug-exit write of 0 (QEMU's status 1, kvm-unit-tests' PASS),
    or HLT (the VMM's configured stop); shutdown, internal error, a limit or another exit code fail
    it (the CLI's status 1)."""
    got = r.stop
    ok = ((got.reason == "debug-exit" and got.code == 0) or got.reason == "hlt"
          or (got.reason == "isa-debug-exit" and got.code == 1))
    why = "" if ok else (f"the guest ended in {got.reason}" + (f" with code {_h(got.code)}" if got.code is not None
                                                              else "") + (f" ({got.detail})" if got.detail else ""))
    return Check(NORMAL_STOP, ok, "debug-exit code 0, isa-debug-exit code 1 or hlt",
                 {"reason": got.reason, "code": got.code}, why)
