"""A test's result from its run, by run_tests.sh's rules (scripts/runtime.bash, scripts/vmm.bash).

isa-debug-exit makes QEMU exit with (code << 1) | 1.  qemu_fixup_return_code turns 1 into 0
(PASS) and 0 (QEMU left without the debug exit: the Bochs shutdown port, a triple fault) into a
failure; run() then says PASS for 0, SKIP for 77 and FAIL for anything else.  The line carries
the test's last `SUMMARY:` (extract_summary reads the last 5 lines).  A kvmsim run that ends
another way (a limit, an internal error, KvmSimBug) is FAIL with that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STATUS_PASS, STATUS_SKIP = 1, 77        # QEMU exit statuses: report_summary()'s 0 and 77 >> 1
ABORT_STATUS = 127                      # lib/abort.c: abort() exits with 63, QEMU's 127
_REPORT = re.compile(r"^(PASS|FAIL|SKIP|XPASS|XFAIL|KFAIL): ?(.*)$")


@dataclass
class Outcome:
    """PASS / FAIL / SKIP for one test, with run_tests.sh's summary text or a reason."""

    name: str
    status: str                        # PASS | FAIL | SKIP
    summary: str = ""                  # "(86 tests, 0 unexpected failures)", from the serial log
    reason: str = ""                   # why SKIP or FAIL when there is no summary to say it
    reports: list[tuple[str, str]] = field(default_factory=list)   # (PASS|FAIL|SKIP..., text) report lines
    seconds: float = 0.0
    exit_status: int | None = None     # the QEMU-style status, where the test reached isa-debug-exit

    def line(self) -> str:
        """`PASS emulator (86 tests, 0 unexpected failures)` / `SKIP vmx (smp = 2)`, as print_result."""
        if self.reason:
            return f"{self.status} {self.name} ({self.reason})"
        return f"{self.status} {self.name} {self.summary}".rstrip()


def extract_summary(serial: str) -> str:
    """runtime.bash extract_summary: the `SUMMARY: ...` among the last 5 lines, as `(...)`."""
    for ln in reversed(serial.replace("\r", "").splitlines()[-5:]):
        if ln.startswith("SUMMARY: "):
            return f"({ln[len('SUMMARY: '):]})"
    return ""


def report_lines(serial: str) -> list[tuple[str, str]]:
    """Each report() line of the log: (its prefix, the rest)."""
    out = []
    for ln in serial.replace("\r", "").splitlines():
        if m := _REPORT.match(ln):
            out.append((m.group(1), m.group(2)))
    return out


def from_status(name: str, status: int, serial: str) -> Outcome:
    """The verdict of a run that ended in QEMU exit status `status` (run()'s case analysis)."""
    summary = extract_summary(serial)
    if status == STATUS_PASS:
        return Outcome(name, "PASS", summary, reports=report_lines(serial), exit_status=status)
    if status == STATUS_SKIP:
        return Outcome(name, "SKIP", summary, reports=report_lines(serial), exit_status=status)
    why = "aborted" if status == ABORT_STATUS else ""
    return Outcome(name, "FAIL", summary, reason="" if summary else why or f"exit status {status}",
                   reports=report_lines(serial), exit_status=status)


def from_run(name: str, stop_reason: str, code: int | None, detail: str, serial: str,
             timeout: str) -> Outcome:
    """The verdict of a kvmsim run (its Stop and serial output)."""
    if stop_reason == "isa-debug-exit" and code is not None:     # code: QEMU's (value << 1) | 1 already
        return from_status(name, code & 0xFF, serial)                 # a process exit status is 8 bits
    summary = extract_summary(serial)
    if stop_reason == "limit":
        why = f"timeout; duration={timeout} ({detail})" if detail else f"timeout; duration={timeout}"
    else:
        why = f"{stop_reason}: {detail}" if detail else stop_reason
    if summary:
        why = f"{why}; {summary[1:-1]}"
    return Outcome(name, "FAIL", summary, reason=why, reports=report_lines(serial))


def from_error(name: str, kind: str, err: BaseException, serial: str = "") -> Outcome:
    """A run that raised: kvmsim bug, internal error, or a scenario kvmsim cannot build."""
    first = (str(err).splitlines() or [""])[0]
    return Outcome(name, "FAIL", extract_summary(serial), reason=f"{kind}: {type(err).__name__}: {first}",
                   reports=report_lines(serial))
