"""Human-readable output of the CLI (rich): run summaries, expectation results, scenario lists.

The CLI only dispatches; everything a person reads is laid out here.  Text that comes from
the run (serial output, diffs, exit records) is printed as plain Text, never as rich markup.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvmsim.realkvm.hostevents import summary_lines
from kvmsim.scenario.expect import Check
from kvmsim.scenario.result import RunResult, _show

MAX_USERSPACE_LINES = 60  # longer streams show the head and the tail
SERIAL_WIDTH = 120        # serial lines wrap here in the report
MAX_SERIAL_LINES = 200    # longer serial output shows the head and the tail (all of it: --serial-out)


def make_console(stderr: bool = False) -> Console:
    return Console(file=sys.stderr if stderr else sys.stdout, soft_wrap=True, highlight=False)


def plain(console: Console, text: str, style: str | None = None) -> None:
    console.print(Text(text, style=style or ""))


def print_stop(console: Console, result: RunResult, where: str = "") -> None:
    s = result.stop
    parts = [s.reason]
    if s.code is not None:
        parts.append(f"code={s.code:#x}")
    if s.suberror is not None:
        parts.append(f"suberror={s.suberror}")
    line = Text()
    line.append(f"{result.scenario}", style="bold")
    line.append(f" [{result.backend}]{where}: stopped: {' '.join(parts)}")
    if s.detail:
        line.append(f" ({s.detail})", style="dim")
    console.print(line)


def exits_table(result: RunResult) -> Table:
    t = Table(title="VM exits", title_justify="left", show_edge=False, pad_edge=False)
    t.add_column("exit reason")
    t.add_column("count", justify="right")
    for name, n in sorted(result.exits.items(), key=lambda kv: (-kv[1], kv[0])):
        t.add_row(name, str(n))
    t.add_row(Text("total", style="bold"), Text(str(sum(result.exits.values())), style="bold"))
    return t


def userspace_lines(result: RunResult) -> list[str]:
    """`#3 KVM_EXIT_MMIO phys_addr=0xd0000000 len=4 is_write=0 data=34120000`, numbered from 1 in
    the whole run; longer streams (or a bounded exit log) show the head, `… M exits omitted`, the tail."""
    at, omitted = result.userspace_omitted_at, result.userspace_omitted
    numbered = [(i + (omitted if i > at and omitted else 0), u) for i, u in enumerate(result.userspace, 1)]
    if len(numbered) > MAX_USERSPACE_LINES:
        head, tail = numbered[:MAX_USERSPACE_LINES - 10], numbered[-10:]
    elif omitted:
        head, tail = numbered[:at], numbered[at:]
    else:
        return [f"#{n} {u.describe()}" for n, u in numbered]
    gap = tail[0][0] - head[-1][0] - 1 if head and tail else omitted
    return ([f"#{n} {u.describe()}" for n, u in head] + [f"… {gap} exits omitted"]
            + [f"#{n} {u.describe()}" for n, u in tail])


def serial_lines(serial: str, width: int = SERIAL_WIDTH, max_lines: int = MAX_SERIAL_LINES) -> list[str]:
    """The guest's serial output for the report: wrapped at `width`, at most `max_lines` lines
    (the head, `… N lines omitted`, the tail), however much the guest printed."""
    lines: list[str] = []
    limit = max_lines + 1   # enough to know that lines must be dropped
    tail: list[str] = []
    more = 0
    for raw in serial.rstrip("\n").split("\n"):
        raw = raw.replace("\r", "")
        for i in range(0, max(len(raw), 1), width):
            piece = raw[i:i + width]
            if len(lines) < limit:
                lines.append(piece)
            else:
                tail.append(piece)
                more += 1
                if len(tail) > 2 * max_lines:
                    del tail[:-max_lines]
    if not more:
        return lines
    allp = lines + tail[-max_lines:]
    total = len(lines) + more
    head_n, tail_n = max_lines - max_lines // 4, max_lines // 4
    kept_tail = allp[-tail_n:] if tail_n else []
    return lines[:head_n] + [f"… {total - head_n - tail_n} lines omitted (--serial-out FILE for all of it)"] + kept_tail


def print_checks(console: Console, checks: Iterable[Check]) -> None:
    for c in checks:
        line = Text()
        line.append("PASS" if c.passed else "FAIL", style="bold green" if c.passed else "bold red")
        line.append(f" {c.name}")
        console.print(line)
        if not c.passed and c.diff:
            for d in c.diff.splitlines():
                plain(console, "    " + d, _diff_style(d))


def _diff_style(line: str) -> str | None:
    if line.startswith("+") and not line.startswith("+++"):
        return "green"
    if line.startswith("-") and not line.startswith("---"):
        return "red"
    if line.startswith(">"):
        return "yellow"
    return None


def print_run(console: Console, result: RunResult, checks: list[Check], trace: bool = False) -> None:
    """The whole human summary of one run."""
    print_stop(console, result)
    if result.guest_insns is not None:
        plain(console, f"guest instructions: {result.guest_insns}", "dim")
    if result.exits:
        console.print(exits_table(result))
    if result.emulation:
        plain(console, "emulation: " + ", ".join(f"{k}={n}" for k, n in sorted(result.emulation.items())))
    if result.userspace_count:
        plain(console, f"userspace exits ({result.userspace_count}):", "bold")
        for line in userspace_lines(result):
            plain(console, "  " + line)
    if result.serial:
        plain(console, "serial:", "bold")
        for line in serial_lines(result.serial):
            plain(console, "  | " + line)
    if result.regs:
        plain(console, "registers: " + regs_line(result.regs))
    if result.exceptions:
        plain(console, "exceptions injected: " + ", ".join(_exc(e) for e in result.exceptions))
    if result.host_events is not None:
        plain(console, f"host kvm events ({result.host_events.get('module', '?')}, tracefs):", "bold")
        for line in summary_lines(result.host_events):
            plain(console, "  " + line)
    if trace and result.trace:
        plain(console, "trace:", "bold")
        for ev in result.trace:
            plain(console, "  " + str(ev))
    if checks:
        print_checks(console, checks)
        n_fail = sum(not c.passed for c in checks)
        verdict = f"{len(checks) - n_fail}/{len(checks)} expectations passed"
        plain(console, verdict, "bold red" if n_fail else "bold green")


def regs_line(regs: dict[str, int]) -> str:
    """`rip=0x100015 rflags=0x2 rax=0x1234 ...`: RIP, RFLAGS, then the non-zero GPRs."""
    first = [k for k in ("rip", "rflags") if k in regs]
    rest = [k for k in regs if k not in first and regs[k]]
    return " ".join(f"{k}={regs[k]:#x}" for k in first + rest)


def _exc(e: dict[str, Any]) -> str:
    return f"#{e.get('vector')}" + (f"({e['error_code']:#x})" if e.get("error_code") is not None else "")


def scenario_table(rows: list[dict[str, str]]) -> Table:
    """`kvmsim list`: one row per file; a row with 'error' shows the load error instead."""
    t = Table(show_lines=False)
    for col in ("file", "name", "mode", "backends", "description"):
        t.add_column(col, overflow="fold")
    for r in rows:
        if "error" in r:
            t.add_row(r["file"], Text("invalid", style="bold red"), "", "", Text(r["error"], style="red"))
        else:
            t.add_row(r["file"], r["name"], r["mode"], r["backends"], Text(r["description"]))
    return t


def counts_table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[Text(str(x)) for x in r])
    return t


# ---------------------------------------------------------------- kvmsim diff

MAX_OTHER_DIFFERENCES = 12


def diff_lines(c: Any) -> list[str]:
    """One scenario of `kvmsim diff` (a differential.Comparison) as plain lines: a status line,
    then labelled vendor differences, or the first divergence and the final registers."""
    if c.status == "SKIP":
        return [f"SKIP   {c.scenario}: {c.reason}"]
    if c.status == "ERROR":
        return [f"ERROR  {c.scenario}: {c.reason}"]
    notes = []
    if c.undefined:
        notes.append("undefined flags labelled (SDM)")
    if c.vendor:
        notes.append(f"{len(c.vendor)} labelled {c.host} difference{'s' if len(c.vendor) > 1 else ''}")
    if c.ignored:
        notes.append("host_dependent, not compared: " + " ".join(c.ignored))
    head = f"{c.status:<6} {c.scenario}  ({c.exits[0]} userspace exits)"
    if c.status == "DIFF" and c.divergence is not None:
        head = f"DIFF   {c.scenario}: first divergence at {c.divergence.where}"
    out = [head + (f"  [{'; '.join(notes)}]" if notes else "")]
    for d in c.undefined:
        for u in d.undefined:
            out.append(f"         labelled: {u.label()}: sim {_show(d.sim)}, kvm {_show(d.kvm)}; {u.where}: {u.text}")
    for d in c.vendor:
        out.append(f"         vendor {c.host} {d.vendor.name}: {d.path}: sim {_show(d.sim)}, kvm {_show(d.kvm)}")
    if c.status != "DIFF":
        return out
    dv = c.divergence
    out.append(f"         sim: {dv.sim}")
    out.append(f"         kvm: {dv.kvm}")
    kvm_rip = f" (kvm rip {dv.kvm_rip:#x})" if dv.kvm_rip is not None and dv.kvm_rip != dv.sim_rip else ""
    out.append(f"         guest at sim rip: {dv.insn}{kvm_rip}")
    out.append(f"         userspace exits: sim {c.exits[0]}, kvm {c.exits[1]}; "
               f"{len(c.differences)} unexplained difference{'s' if len(c.differences) != 1 else ''}:")
    for d in c.differences[:MAX_OTHER_DIFFERENCES]:
        out.append(f"           {d.path}: sim {_show(d.sim)} != kvm {_show(d.kvm)}")
    if len(c.differences) > MAX_OTHER_DIFFERENCES:
        out.append(f"           ... {len(c.differences) - MAX_OTHER_DIFFERENCES} more")
    out.append("         final registers        sim                 kvm")
    for name, a, b, mark in c.registers:
        fa = f"{a:#018x}" if isinstance(a, int) else str(a)
        fb = f"{b:#018x}" if isinstance(b, int) else str(b)
        out.append(f"           {name:<7} {fa:>18}  {fb:>18}  {mark}".rstrip())
    return out


def diff_summary(comparisons: list[Any], host: str) -> list[str]:
    """The closing lines: each labelled vendor difference seen, explained once, then the counts."""
    seen = {d.vendor.name: d.vendor for c in comparisons for d in c.vendor}
    out = [f"labelled {host} difference {name}: {vd.explanation}" for name, vd in sorted(seen.items())]
    n = {s: sum(c.status == s for c in comparisons) for s in ("MATCH", "DIFF", "SKIP", "ERROR")}
    labelled = sum(bool(c.vendor) for c in comparisons if c.status == "MATCH")
    undefined = sum(bool(c.undefined) for c in comparisons if c.status == "MATCH")
    extra = ", ".join(([f"{labelled} with labelled {host} differences"] if labelled else [])
                      + ([f"{undefined} with undefined flags labelled"] if undefined else []))
    extra = f" ({extra})" if extra else ""
    out.append(f"diff on {host}: {n['MATCH'] + n['DIFF']} compared, {n['MATCH']} MATCH{extra}, "
               f"{n['DIFF']} DIFF, {n['SKIP']} SKIP" + (f", {n['ERROR']} ERROR" if n["ERROR"] else ""))
    return out
