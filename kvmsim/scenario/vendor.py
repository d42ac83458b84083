"""Differences between the model (KVM on Intel VMX) and a real host that only the vendor explains.

Used by `kvmsim diff` (differential.py) and the fuzzer's diff outcomes; it reads RunResults, so it
sits beside them in scenario/, not in realkvm/.

`kvmsim diff` compares what userspace and the guest observe.  Where a host's vendor module
(kvm_intel, kvm_amd, kvm_pvm) makes the real kernel differ from VMX for a reason outside the
model, the difference is *labelled*, not hidden: it is printed with the explanation below,
and accepted only when it has exactly the predicted shape (`holds`); any other value of the
same field is an ordinary divergence.

    VENDOR_DIFFERENCES[module] = [VendorDifference(pattern, explanation, holds), ...]

`pattern` is an fnmatch pattern over diff paths (`regs.rip`, `userspace.*.fields.data`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

from kvmsim.scenario.result import RunResult

X86_EFLAGS_RF = 1 << 16
KVM_EXIT_IO_OUT = 1


@dataclass(frozen=True)
class DiffContext:
    """What a `holds` predicate may look at: both results and the guest's instruction lengths."""

    sim: RunResult
    kvm: RunResult
    insn: Callable[[int], tuple[int, str] | None]   # (length, mnemonic) of the guest instruction at a RIP


# holds(ctx, sim value, kvm value, path) -> True iff the difference is exactly the one the vendor explains.
Holds = Callable[..., bool]


@dataclass(frozen=True)
class VendorDifference:
    name: str          # short label printed beside each occurrence
    pattern: str
    explanation: str
    holds: Holds


def _stopped_on_emulated_out(ctx: DiffContext, sim_rip: Any, kvm_rip: Any, path: str = "") -> bool:
    """The run stopped at the KVM_EXIT_IO of an OUT (not OUTS) and kvm's RIP is the sim's plus that OUT."""
    if not ctx.sim.userspace or not ctx.kvm.userspace or not isinstance(sim_rip, int) or not isinstance(kvm_rip, int):
        return False
    last, last_kvm = ctx.sim.userspace[-1], ctx.kvm.userspace[-1]
    if last.to_dict() != last_kvm.to_dict():
        return False
    if last.reason != "IO" or last.fields.get("direction") != KVM_EXIT_IO_OUT:
        return False
    insn = ctx.insn(sim_rip)
    return insn is not None and insn[1] == "out" and kvm_rip == sim_rip + insn[0]


def _rf_after_software_fault_delivery(ctx: DiffContext, sim_rflags: Any, kvm_rflags: Any, path: str = "") -> bool:
    """Both runs ended in a triple fault and the RFLAGS differ in RF alone."""
    return (ctx.sim.stop.reason == ctx.kvm.stop.reason == "shutdown" and isinstance(sim_rflags, int)
            and isinstance(kvm_rflags, int) and sim_rflags ^ kvm_rflags == X86_EFLAGS_RF)


def _same_stream(ctx: DiffContext) -> bool:
    return [e.to_dict() for e in ctx.sim.userspace] == [e.to_dict() for e in ctx.kvm.userspace]


def _irq_window_one_insn_late(ctx: DiffContext, sim_v: Any, kvm_v: Any, path: str = "") -> bool:
    """Same exit stream with a KVM_EXIT_IRQ_WINDOW_OPEN in it; the interrupted RIP the guest saved
    in RSI is, on kvm, the sim's plus the length of the instruction there, or now and then of the
    two there (RDI: its flag for 'interrupted exactly at the sim's RIP', 1 on sim, 0 on kvm)."""
    if not _same_stream(ctx) or not any(e.reason == "IRQ_WINDOW_OPEN" for e in ctx.sim.userspace):
        return False
    s, k = ctx.sim.regs.get("rsi"), ctx.kvm.regs.get("rsi")
    late = []                                   # the boundaries one and two instructions after the sim's
    at = s
    for _ in range(2):
        insn = ctx.insn(at) if isinstance(at, int) else None
        if insn is None:
            break
        at += insn[0]
        late.append(at)
    if k not in late:
        return False
    return path == "regs.rsi" or (path == "regs.rdi" and sim_v == 1 and kvm_v == 0)


def _singlestep_dr7_untouched(ctx: DiffContext, sim_v: Any, kvm_v: Any, path: str = "") -> bool:
    """A single-step KVM_EXIT_DEBUG that agrees but for dr7: sim DR7 has its fixed bit 10, kvm 0."""
    parts = path.split(".")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    i = int(parts[1])
    if i >= len(ctx.sim.userspace) or i >= len(ctx.kvm.userspace):
        return False
    a, b = ctx.sim.userspace[i], ctx.kvm.userspace[i]
    if a.reason != "DEBUG" or b.reason != "DEBUG" or a.fields.get("exception") != 1:
        return False
    rest = {k: v for k, v in a.fields.items() if k != "dr7"}
    return (rest == {k: v for k, v in b.fields.items() if k != "dr7"} and isinstance(sim_v, int)
            and sim_v & 0x400 and kvm_v == 0)


# KVM_INTERNAL_ERROR_EMULATION with KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
# (x86.c prepare_emulation_failure_exit): data[0] flags, data[1..2] insn_size + 15 bytes, then
# the 5 words of kvm_x86_ops.get_exit_info (reason, info1, info2, intr_info, error_code).
KVM_INTERNAL_ERROR_EMULATION = 1
EMULATION_EXIT_INFO_WORDS = range(3, 8)


def _emulation_failure_exit_info(ctx: DiffContext, sim_word: Any, kvm_word: Any, path: str = "") -> bool:
    """Only get_exit_info's words of an emulation-failure exit differ; the rest of that exit agrees."""
    parts = path.split(".")   # userspace.<i>.fields.data.<j>
    if len(parts) != 5 or not parts[1].isdigit() or not parts[4].isdigit():
        return False
    i, j = int(parts[1]), int(parts[4])
    if j not in EMULATION_EXIT_INFO_WORDS or i >= min(len(ctx.sim.userspace), len(ctx.kvm.userspace)):
        return False
    a, b = ctx.sim.userspace[i], ctx.kvm.userspace[i]
    if not a.reason == b.reason == "INTERNAL_ERROR":
        return False
    fa, fb = a.fields, b.fields
    same_head = all(fa.get(k) == fb.get(k) for k in ("suberror", "ndata")) and fa.get("data", [])[:3] == fb.get("data", [])[:3]
    return same_head and fa.get("suberror") == KVM_INTERNAL_ERROR_EMULATION and fa.get("ndata") == 8


VENDOR_DIFFERENCES: dict[str, list[VendorDifference]] = {
    "kvm_intel": [],
    "kvm_amd": [],
    "kvm_pvm": [
        VendorDifference(
            "pvm-out-retired", "regs.rip",
            "kvm_pvm runs the guest's OUT in KVM's emulator, which retires it before the KVM_EXIT_IO "
            "reaches userspace, so RIP is already past the OUT; on VMX, kvm_fast_pio leaves RIP on the "
            "OUT until complete_fast_pio_out skips it on the next KVM_RUN. Seen only when userspace "
            "reads registers at that exit (a run that stops on it). Checked: the last exit is an OUT's "
            "and kvm RIP = sim RIP + the OUT's length.",
            _stopped_on_emulated_out),
        VendorDifference(
            "pvm-fault-rf", "regs.rflags",
            "kvm_pvm raises the guest's fault in KVM's emulator and delivers it in software: "
            "inject_pending_event (x86.c) sets RFLAGS.RF for a fault-class exception before delivery, "
            "and a delivery that ends in a triple fault leaves RF set. On VMX the CPU delivers the "
            "fault itself (not intercepted) and the model's triple-fault exit keeps RF clear. "
            "Checked: both runs shut down and RFLAGS differ in RF only.",
            _rf_after_software_fault_delivery),
        VendorDifference(
            "pvm-emulation-exit-info", "userspace.*.fields.data.*",
            "KVM_INTERNAL_ERROR_EMULATION data[3..7] are the vendor's get_exit_info words (exit reason, "
            "info1, info2, intr_info, error_code) for the exit that led to emulation: VMX reports e.g. "
            "EPT_VIOLATION (48) and its exit qualification, kvm_pvm its own exit code (0x1000) and zeros. "
            "Checked: same suberror, ndata 8, flags and instruction bytes; only words 3-7 differ.",
            _emulation_failure_exit_info),
        VendorDifference(
            "pvm-irq-window-late", "regs.r[sd]i",
            "kvm_pvm has no VMX interrupt-window exiting: after STI it lets the guest run natively and "
            "notices the open window one instruction later than the VMX boundary at the end of the STI "
            "shadow, so the KVM_EXIT_IRQ_WINDOW_OPEN (same exit stream) and the interrupt the VMM then "
            "injects come one instruction late (in about 1 run of 100, two late: 3 of 300 runs, with the "
            "modules compiled or not). Checked: identical userspace exits with an IRQ_WINDOW_OPEN; kvm's "
            "interrupted RIP (RSI) = sim's + the length of the one or two instructions there.",
            _irq_window_one_insn_late),
        VendorDifference(
            "pvm-singlestep-dr7", "userspace.*.fields.dr7",
            "kvm_pvm single-steps CPL0 code in KVM's emulator: kvm_vcpu_do_singlestep fills "
            "run->debug.arch dr6, pc and exception but leaves dr7 as it was (0); on VMX the #DB is "
            "intercepted and handle_exception_nmi reports GUEST_DR7 (0x400 after reset). Checked: both "
            "exits are single-step KVM_EXIT_DEBUGs that agree except dr7; sim has bit 10, kvm 0.",
            _singlestep_dr7_untouched),
    ],
}


def explain(module: str, path: str, sim_value: Any, kvm_value: Any, ctx: DiffContext) -> VendorDifference | None:
    """The vendor difference that accounts for this one, or None if it is an ordinary divergence."""
    for vd in VENDOR_DIFFERENCES.get(module, []):
        if fnmatch.fnmatchcase(path, vd.pattern) and vd.holds(ctx, sim_value, kvm_value, path):
            return vd
    return None


def table_lines(module: str | None = None) -> list[str]:
    """The table as text (README, `kvmsim diff --vendor-table`)."""
    out = []
    for mod, entries in sorted(VENDOR_DIFFERENCES.items()):
        if module is not None and mod != module:
            continue
        if not entries:
            out.append(f"{mod}: (none known)")
        for vd in entries:
            out.append(f"{mod}: {vd.name} ({vd.pattern}): {vd.explanation}")
    return out
