"""`kvmsim census`: the seed's question — who calls KVM's emulator, how, on what, and with what result.

Built only from the probe stream (calls to x86_emulate_instruction and what happens inside them,
kvm_exit/kvm_entry around them), so it works live or on a recorded JSON Lines file:
  by EMULTYPE    each flag counted on its own, and each exact combination;
  by entry path  the exit handler (the frame vmx_handle_exit called) or the completion
                 (the frame kvm_arch_vcpu_ioctl_run called) down to x86_emulate_instruction;
  by mnemonic    capstone on kvm_emulate_insn's bytes; a NO_DECODE re-entry decodes nothing, so it
                 counts under the instruction decoded before the exit it completes;
  outcomes       failed (handle_emulation_failure), restart (x86_emulate_insn returned
                 EMULATION_RESTART), retry (an ALLOW_RETRY_PF call unprotected the page-table gfn
                 and let the guest re-execute: kvm_mmu_unprotect_gfn_and_retry returned true), OK (the rest);
  host NMIs      EXCEPTION_NMI exits whose interruption info is an NMI, and the emulations beside them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kvmsim.hw.vmcs import exit_reason_name
from kvmsim.kvm.emulate.codes import EMULATION_RESTART, EmulType
from kvmsim.probe import Event
from kvmsim.trace.events import RunInfo

EMULATE = "x86_emulate_instruction"
_NMI_INFO_MASK, _NMI_INFO = 0x80000700, 0x80000200   # valid bit + interruption type NMI (2)
_CS_MODES = {"prot64": "64", "prot32": "32", "prot16": "16", "real": "16", "vm16": "16", "vm86": "16"}

# How each count arises (the report prints the line beside its row).
WHY = {
    "0": "an exit handler emulates the instruction it exited on (string I/O via handle_io, "
         "UMIP descriptor instructions via handle_desc), or handle_invalid_guest_state emulates "
         "while the state is invalid without unrestricted guest",
    "NO_DECODE": "userspace completed an MMIO read or a string IN: complete_emulated_mmio/_pio "
                 "re-enter the emulator with the instruction already decoded",
    "PF": "an EPT violation/misconfig on a GPA with no memslot (MMIO), or without EPT a #PF exit on "
          "one (first not present, then the MMIO SPTE's RSVD): kvm_mmu_page_fault emulates the faulting "
          "instruction",
    "ALLOW_RETRY_PF|PF": "without EPT, a write to a guest page table the shadow MMU write-protects: "
                         "emulated (kvm_mmu_track_write), or, for an instruction that does not write page "
                         "tables, the gfn is unprotected and the guest retries it",
    "SKIP": "KVM runs nested (host is a hypervisor): on an EPT-misconfig fast-MMIO doorbell "
            "skip_emulated_instruction cannot trust VM_EXIT_INSTRUCTION_LEN and decodes just to skip",
    "TRAP_UD": "a #UD intercepted (handle_exception_nmi → handle_ud): VMMCALL on an Intel host is "
               "rewritten to VMCALL; other opcodes go back to the guest as #UD",
    "TRAP_UD_FORCED": "the forced-emulation prefix (ud2; .ascii \"kvm\") before an instruction",
    "VMWARE_GP": "a #GP intercepted with the VMware backdoor enabled",
    "host-nmi": "the host's perf NMI watchdog fired while the guest ran: VM exit EXCEPTION_NMI, "
                "the host's NMI handler runs, handle_exception_nmi returns 1 — no emulation",
}


def emultype_name(t: int) -> str:
    return "0" if t == 0 else "|".join(f.name for f in EmulType if f & t)


def emultype_flags(t: int) -> list[str]:
    return ["0"] if t == 0 else [f.name for f in EmulType if f & t]


_DISASM: dict[tuple[str, str], str] = {}


def mnemonic(insn_hex: str, mode: str) -> str:
    """The first instruction of the bytes, as capstone names it ('(bad)' if it cannot)."""
    key = (insn_hex, mode)
    m = _DISASM.get(key)
    if m is None:
        try:
            import capstone
            md = capstone.Cs(capstone.CS_ARCH_X86, {"64": capstone.CS_MODE_64, "32": capstone.CS_MODE_32,
                                                     "16": capstone.CS_MODE_16}[_CS_MODES.get(mode, "64")])
            first = next(md.disasm_lite(bytes.fromhex(insn_hex), 0, 1), None)
            m = first[2] if first else "(bad)"
        except (ValueError, ImportError):
            m = "(bad)"
        _DISASM[key] = m
    return m


@dataclass
class _Call:
    type: int
    handler: str
    path: str
    mnemonic: str | None = None
    failed: bool = False
    restarts: int = 0
    retried: bool = False


@dataclass
class Census:
    """Consumer over any number of runs; `to_dict()` is what --json prints and tests read back."""

    runs: list[str] = field(default_factory=list)
    by_combination: Counter = field(default_factory=Counter)
    by_flag: Counter = field(default_factory=Counter)
    by_handler: Counter = field(default_factory=Counter)
    by_path: Counter = field(default_factory=Counter)
    by_mnemonic: Counter = field(default_factory=Counter)      # mnemonic -> calls (decoded + completing)
    completing: Counter = field(default_factory=Counter)       # mnemonic -> NO_DECODE re-entries
    outcomes: Counter = field(default_factory=Counter)
    to_userspace: int = 0
    restarts: int = 0
    exits: Counter = field(default_factory=Counter)            # exit reason name -> kvm_exit count
    host_nmi_exits: int = 0
    host_nmi_with_emulation: int = 0
    run_logs: list[dict[str, Any]] = field(default_factory=list)   # each run's own end record

    def __post_init__(self) -> None:
        self._open: list[_Call] = []
        self._last_mnemonic = "?"
        self._in_exit: str | None = None
        self._exit_emulations = 0
        self._exit_is_host_nmi = False

    # ---- consumer protocol
    def begin_run(self, run: RunInfo) -> None:
        self.runs.append(run.scenario)
        self._open.clear()
        self._last_mnemonic = "?"
        self._in_exit = None

    def end_run(self, run: RunInfo) -> None:
        self._close_exit()
        self.run_logs.append({"scenario": run.scenario, **run.end})

    def feed(self, ev: Event, ts: int) -> None:
        kind, name = ev.kind, ev.name
        if kind == "tp":
            if name == "kvm_exit":
                self._close_exit()
                reason = ev.fields.get("exit_reason", 0)
                self._in_exit = exit_reason_name(reason)
                self.exits[self._in_exit] += 1
                self._exit_is_host_nmi = (reason & 0xFFFF) == 0 and \
                    (ev.fields.get("intr_info", 0) & _NMI_INFO_MASK) == _NMI_INFO
                self._exit_emulations = 0
            elif name == "kvm_entry":
                self._close_exit()
            elif name == "kvm_emulate_insn" and self._open:
                call = self._open[-1]
                f = ev.fields
                call.mnemonic = self._last_mnemonic = mnemonic(str(f.get("insn", "")), str(f.get("flags", "")))
                if f.get("failed"):
                    call.failed = True
            return
        if name == EMULATE:
            if kind == "call":
                self._open.append(self._new_call(ev))
                self._exit_emulations += 1
            elif self._open:
                self._finish(self._open.pop(), ev.fields.get("ret"))
        elif self._open:
            if name == "handle_emulation_failure" and kind == "call":
                self._open[-1].failed = True
            elif name == "x86_emulate_insn" and kind == "ret" and ev.fields.get("ret") == EMULATION_RESTART:
                self._open[-1].restarts += 1
            elif name == "kvm_mmu_unprotect_gfn_and_retry" and kind == "ret" and ev.fields.get("ret"):
                self._open[-1].retried = True

    # ---- internals
    def _new_call(self, ev: Event) -> _Call:
        t = int(ev.fields.get("emulation_type") or 0)
        stack = ev.stack
        start = 0
        for anchor in ("vmx_handle_exit", "kvm_arch_vcpu_ioctl_run"):
            if anchor in stack:
                start = len(stack) - stack[::-1].index(anchor)
                break
        frames = stack[start:] + (EMULATE,)
        handler = frames[0] if len(frames) > 1 else "?"
        return _Call(t, handler, " → ".join(frames))

    def _finish(self, call: _Call, ret: Any) -> None:
        name = emultype_name(call.type)
        self.by_combination[name] += 1
        for flag in emultype_flags(call.type):
            self.by_flag[flag] += 1
        self.by_handler[call.handler] += 1
        self.by_path[call.path] += 1
        if call.mnemonic is None:          # NO_DECODE: completes the instruction decoded before
            m = self._last_mnemonic
            self.completing[m] += 1
        else:
            m = call.mnemonic
        self.by_mnemonic[m] += 1
        outcome = "failed" if call.failed else "retry" if call.retried else "restart" if call.restarts else "OK"
        self.outcomes[outcome] += 1
        self.restarts += call.restarts
        if ret == 0:
            self.to_userspace += 1

    def _close_exit(self) -> None:
        if self._in_exit is not None and self._exit_is_host_nmi:
            self.host_nmi_exits += 1
            if self._exit_emulations:
                self.host_nmi_with_emulation += 1
        self._in_exit = None
        self._exit_is_host_nmi = False

    # ---- output
    @property
    def emulations(self) -> int:
        return sum(self.by_combination.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs, "emulations": self.emulations,
            "by_emultype": dict(self.by_flag.most_common()),
            "by_emultype_combination": dict(self.by_combination.most_common()),
            "by_handler": dict(self.by_handler.most_common()),
            "by_path": dict(self.by_path.most_common()),
            "by_mnemonic": dict(self.by_mnemonic.most_common()),
            "no_decode_completing": dict(self.completing.most_common()),
            "outcomes": {k: self.outcomes.get(k, 0) for k in ("OK", "failed", "restart", "retry")},
            "restarts": self.restarts, "returned_to_userspace": self.to_userspace,
            "exits": dict(self.exits.most_common()),
            "host_nmi_exits": self.host_nmi_exits,
            "host_nmi_exits_without_emulation": self.host_nmi_exits - self.host_nmi_with_emulation,
            "run_logs": self.run_logs,
        }

    def report(self) -> list[str]:
        d = self.to_dict()
        out = [f"emulation census of {len(self.runs)} run(s): {', '.join(self.runs)}",
               f"x86_emulate_instruction calls: {d['emulations']}", ""]

        def table(title: str, head: tuple[str, ...], rows: list[tuple]) -> None:
            cells = [tuple(str(c) for c in r) for r in rows]
            widths = [max(len(x) for x in col) for col in zip(head, *cells)] if cells else [len(h) for h in head]
            out.append(title)
            out.append("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
            for r in cells:
                out.append("  " + "  ".join(c.rjust(w) if c.isdigit() and i else c.ljust(w)
                                            for i, (c, w) in enumerate(zip(r, widths))).rstrip())
            out.append("")

        table("by EMULTYPE combination (exact emulation_type)", ("emultype", "calls", "how it arises"),
              [(k, n, WHY.get(k, "")) for k, n in d["by_emultype_combination"].items()])
        table("by EMULTYPE flag (a call counts once for each flag it has)", ("flag", "calls"),
              list(d["by_emultype"].items()))
        table("by entry path (exit handler or completion → x86_emulate_instruction)", ("calls", "path"),
              [(n, p) for p, n in d["by_path"].items()])
        table("by instruction (capstone; NO_DECODE counts under the instruction it completes)",
              ("mnemonic", "calls", "NO_DECODE"),
              [(m, n, d["no_decode_completing"].get(m, 0)) for m, n in d["by_mnemonic"].items()])
        table("outcomes", ("outcome", "calls"), list(d["outcomes"].items()))
        out.append(f"  restarts (EMULATION_RESTART, REP string iterations): {d['restarts']}; "
                   f"calls that exited to userspace (returned 0): {d['returned_to_userspace']}")
        out.append("  retry: ALLOW_RETRY_PF calls that unprotected a page table and let the guest re-execute "
                   "(kvm_mmu_unprotect_gfn_and_retry; shadow paging only)")
        out.append("")
        table("VM exits (kvm_exit)", ("exit reason", "count"), list(d["exits"].items()))
        out.append(f"host NMI exits (EXCEPTION_NMI, intr_info NMI): {d['host_nmi_exits']}, "
                   f"with zero emulations beside them: {d['host_nmi_exits_without_emulation']}")
        out.append(f"  {WHY['host-nmi']}")
        return out


def parse_report(lines: list[str]) -> dict[str, dict[str, int]]:
    """Read the text report back: table title's first words -> {row key: count} (tests use it)."""
    import re
    out: dict[str, dict[str, int]] = {}
    title = None
    for i, line in enumerate(lines):
        if line and not line.startswith(" ") and i + 1 < len(lines) and lines[i + 1].startswith("  ") \
                and not lines[i + 1].strip()[:1].isdigit():
            title = line.split(" (")[0]
            out[title] = {}
            continue
        if title is None or not line.startswith("  "):
            title = None if not line.strip() else title
            continue
        cols = re.split(r"\s{2,}", line.strip())
        if title == "by entry path":
            if cols[0].isdigit():
                out[title][cols[1]] = int(cols[0])
        elif len(cols) >= 2 and cols[1].isdigit():
            out[title][cols[0]] = int(cols[1])
    m = re.search(r"host NMI exits \(EXCEPTION_NMI, intr_info NMI\): (\d+), with zero emulations beside them: (\d+)",
                  "\n".join(lines))
    if m:
        out["host NMI"] = {"exits": int(m[1]), "without_emulation": int(m[2])}
    return out
