"""What the VMM's run loop records: each return from KVM_RUN to userspace, and why the run ended.

Field names inside `UserspaceExit.fields` are kvm_run's own (`run->io.port`, `run->mmio.phys_addr`,
...), so a record reads like the struct userspace saw.  The scenario layer collects them into a
RunResult (scenario/result.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Fields whose integer values are printed in hex by describe(); the rest are decimal.
HEX_FIELDS = frozenset({"port", "phys_addr", "index", "gpa", "nr", "hardware_exit_reason", "pc", "dr6", "dr7",
                        "hardware_entry_failure_reason", "exception", "error_code", "flags"})


class UserspaceExit:
    """One return from KVM_RUN to userspace.

    reason: KVM_EXIT_* without the prefix: "IO", "MMIO", "HLT", "SHUTDOWN", "INTERNAL_ERROR",
            "X86_RDMSR", "X86_WRMSR", "HYPERCALL", "FAIL_ENTRY", "EXCEPTION", ...
    fields: the kvm_run union member, with the kernel's field names:
      IO             direction (0 in / 1 out), size, port, count, data (hex of the pio data page bytes)
      MMIO           phys_addr, len, is_write (0/1), data (hex of the len bytes)
      INTERNAL_ERROR suberror, ndata, data (list of ints)
      X86_RDMSR/WRMSR error, reason, index, data (int)
      HYPERCALL      nr, args (list), ret, flags
      FAIL_ENTRY     hardware_entry_failure_reason, cpu
      IRQ_WINDOW_OPEN  if_flag, ready_for_interrupt_injection (kvm_run's own fields)
      DEBUG          exception, pc, dr6, dr7 (run->debug.arch)
    """

    # A plain slots class (one is built per return to userspace): the dataclass's constructor, equality
    # and repr, without its per-instance dict and default_factory call.
    __slots__ = ("reason", "fields")
    __match_args__ = ("reason", "fields")

    reason: str
    fields: dict[str, Any]

    def __init__(self, reason: str, fields: dict[str, Any] | None = None) -> None:
        self.reason = reason
        self.fields = {} if fields is None else fields

    def __repr__(self) -> str:
        return f"UserspaceExit(reason={self.reason!r}, fields={self.fields!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.reason, self.fields) == (other.reason, other.fields)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]   # mutable, like the dataclass (eq=True)

    @property
    def kname(self) -> str:
        return f"KVM_EXIT_{self.reason}"

    def describe(self) -> str:
        """`KVM_EXIT_MMIO phys_addr=0xd0000000 len=4 is_write=0 data=34120000`."""
        return " ".join([self.kname] + [f"{k}={_fmt(self.reason, k, v)}" for k, v in self.fields.items()])

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "fields": dict(self.fields)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UserspaceExit":
        return cls(reason=d["reason"], fields=dict(d.get("fields", {})))


def _fmt(reason: str, key: str, v: Any) -> str:
    if reason == "IO" and key == "direction" and v in (0, 1):
        return ("in", "out")[v]
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return hex(v) if key in HEX_FIELDS or (key == "data" and reason != "IO") else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hex(x) if isinstance(x, int) else str(x) for x in v) + "]"
    return str(v)


@dataclass
class Stop:
    """Why the run ended.

    reason: debug-exit | shutdown | internal-error | hlt | fail-entry | limit | mmio-unclaimed |
            io-unclaimed | exception | device-error (a scenario's Python device raised) |
            isa-debug-exit | bochs-shutdown (vmm/devices/exit_ports.py)
    code:   debug-exit value written, isa-debug-exit's QEMU exit status (value << 1) | 1,
            KVM_EXIT_EXCEPTION vector, fail-entry hardware reason, ...
    suberror: KVM_INTERNAL_ERROR_* for internal-error
    detail: one human line ("max_exits 10000 reached", "unclaimed MMIO read at 0xfee00000", ...)
    """

    reason: str
    code: int | None = None
    suberror: int | None = None
    detail: str = ""
