"""How one random-guest run ended: a defined exit, a reported limit, or a BUG.

    defined   the run stopped on something real KVM can give: the trailer's OUT then HLT
              ("trailer"), an exception handler's OUT then HLT ("#UD" ...), any other HLT,
              shutdown, internal error with its suberror, debug-exit, fail-entry, ...
    limit     the VMM's max_exits or the per-guest wall time ended the run
    bug       a Python exception escaped the simulator (KvmSimBug or any traceback), the worker
              process died, or a run went on past its wall limit (hang)

Differential outcomes (sim vs /dev/kvm) are in `diff_outcome`.
"""

from __future__ import annotations

from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs

from kvmsim.fuzz.guests import TRAILER_BYTE, TRAILER_PORT, VECTOR_PORT
from kvmsim.scenario.result import RunResult, diff_paths
from kvmsim.scenario.vendor import DiffContext, explain
from kvmsim.vmm.exits import UserspaceExit

# Exception mnemonics (SDM vol. 3 table 6-1); other vectors print as "vector N".
VECTOR_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
                10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC",
                19: "#XM", 20: "#VE", 21: "#CP"}
KVM_EXIT_IO_OUT = 1
_LIMITS = (("max_vm_exits", "limit: VM exits (instruction budget)"), ("max_exits", "limit: max_exits"),
           ("wall_seconds", "limit: wall time"))   # Stop.detail prefix -> summary row
KVM_INTERNAL_ERROR_EMULATION = 1


@dataclass(frozen=True)
class Outcome:
    kind: str      # "defined" | "limit" | "bug"
    label: str     # the summary row: "trailer", "#UD", "shutdown", "internal-error EMULATION", ...
    detail: str = ""   # bugs: the one-line error


def _out_byte(e: UserspaceExit, port: int) -> int | None:
    """The byte of a one-byte OUT to `port`, or None."""
    f = e.fields
    if e.reason != "IO" or f.get("direction") != KVM_EXIT_IO_OUT or f.get("port") != port or f.get("size") != 1:
        return None
    return int(f.get("data", "00")[:2], 16)


def vector_label(v: int) -> str:
    """Exceptions by mnemonic; vectors 32-255 (only INT n reaches them here) share one row."""
    return VECTOR_NAMES.get(v, f"vector {v}" if v < 32 else "vector 32-255 (INT n)")


def classify(res: RunResult) -> Outcome:
    """The outcome of a finished run (one that returned a RunResult)."""
    s = res.stop
    if s.reason == "hlt":
        prev = res.userspace[-2] if len(res.userspace) >= 2 else None
        if prev is not None and _out_byte(prev, TRAILER_PORT) == TRAILER_BYTE:
            return Outcome("defined", "trailer")
        if prev is not None and (v := _out_byte(prev, VECTOR_PORT)) is not None:
            return Outcome("defined", vector_label(v))
        return Outcome("defined", "hlt")
    if s.reason == "limit":
        return Outcome("limit", next((label for key, label in _LIMITS if s.detail.startswith(key)), "limit: wall time"))
    if s.reason == "internal-error":
        return Outcome("defined", f"internal-error {s.detail.removeprefix('KVM_INTERNAL_ERROR_')}")
    if s.reason == "exception":
        return Outcome("defined", f"KVM_EXIT_EXCEPTION {vector_label(s.code or 0)}")
    if s.reason == "unknown-exit":
        return Outcome("defined", s.detail.removeprefix("unhandled "))
    if s.reason == "error":
        return Outcome("defined", f"KVM_RUN error {s.detail}")
    return Outcome("defined", s.reason)   # shutdown, debug-exit, fail-entry, *-unclaimed


def bug(kind: str, err: str) -> Outcome:
    return Outcome("bug", f"BUG {kind}", err)


def _short(e: UserspaceExit) -> str:
    """The kind of one exit, without addresses (summary rows): `IO out`, `MMIO w`, `INTERNAL_ERROR 1`."""
    f = e.fields
    if e.reason == "IO":
        return f"IO {'out' if f.get('direction') == KVM_EXIT_IO_OUT else 'in'}"
    if e.reason == "MMIO":
        return f"MMIO {'w' if f.get('is_write') else 'r'}"
    if e.reason == "INTERNAL_ERROR":
        return f"INTERNAL_ERROR {f.get('suberror')}"
    return e.reason


def streams_agree(sim: RunResult, kvm: RunResult) -> bool:
    """The userspace exit streams are equal field by field and the runs stopped for the same reason."""
    return sim.userspace == kvm.userspace and (sim.stop.reason, sim.stop.code, sim.stop.suberror) == (
        kvm.stop.reason, kvm.stop.code, kvm.stop.suberror)


# Differences a kvm_pvm host is known to make on random guests.  kvm_pvm runs every CPL0 guest
# instruction through KVM's emulator (scenario/vendor.py), so an instruction the emulator does not
# know ends in KVM_INTERNAL_ERROR_EMULATION there, while VMX silicon executes it natively.  Labelled
# only when kvm's stream equals the sim's up to that failure; "presumed" because no VMX host here
# can confirm what the instruction does natively (the row keeps its own count, never "agree").
PVM_EMULATION_FAILURE = "kvm_pvm artefact (presumed): KVM's emulator fails on a CPL0 instruction"
EMULATION_FLAG_INSTRUCTION_BYTES = 1
_CS_MODES = {"real16": CS_MODE_16, "prot32": CS_MODE_32, "long64": CS_MODE_64}


def failed_insn(res: RunResult, mode: str) -> str:
    """The instruction an emulation failure carries (KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
    data[1..2] are insn_size then 15 bytes), disassembled."""
    f = res.userspace[-1].fields if res.userspace else {}
    data = f.get("data") or []
    if len(data) < 3 or not data[0] & EMULATION_FLAG_INSTRUCTION_BYTES:
        return "(no instruction bytes)"
    raw = data[1].to_bytes(8, "little") + data[2].to_bytes(8, "little")
    code = raw[1:1 + min(raw[0], 15)]
    i = next(Cs(CS_ARCH_X86, _CS_MODES[mode]).disasm(code, 0, 1), None)
    return f"{i.mnemonic} ({code[:i.size].hex()})" if i is not None else f"undecodable ({code.hex()})"


PVM_REP_IN = "kvm_pvm artefact: KVM's emulator takes a REP-prefixed IN imm8/DX's count from RCX"


def _rep_in_count(sim: RunResult, kvm: RunResult) -> bool:
    """The runs differ in one IN exit only: the sim's has count 1, kvm's the same port and size with a
    larger count.  emulate.c pio_in_emulated takes the count from RCX whenever a REP prefix is present,
    string instruction or not; VMX hardware's IN (not INS) ignores REP and exits with one."""
    if len(sim.userspace) != len(kvm.userspace) or (sim.stop.reason, sim.stop.code) != (kvm.stop.reason, kvm.stop.code):
        return False
    pairs = [(a, b) for a, b in zip(sim.userspace, kvm.userspace) if a != b]
    if len(pairs) != 1 or not pairs[0][0].reason == pairs[0][1].reason == "IO":
        return False
    fa, fb = pairs[0][0].fields, pairs[0][1].fields
    return (fa.get("direction") == fb.get("direction") == 0 and fa.get("count") == 1 and fb.get("count", 0) > 1
            and (fa.get("port"), fa.get("size")) == (fb.get("port"), fb.get("size")))


def _exit_info_word(sim: RunResult, kvm: RunResult, path: str) -> bool:
    """`userspace.i.fields.data.j` is one of get_exit_info's five words in an emulation failure that
    otherwise agrees.  x86.c prepare_emulation_failure_exit puts them after data[0] (flags) and, with
    KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, after the two words of instruction bytes:
    data[3..7] (ndata 8) or data[1..5] (ndata 6).  scenario/vendor.py labels the ndata 8 form only."""
    parts = path.split(".")
    if len(parts) != 5 or parts[2:4] != ["fields", "data"] or not parts[1].isdigit() or not parts[4].isdigit():
        return False
    i, j = int(parts[1]), int(parts[4])
    if i >= min(len(sim.userspace), len(kvm.userspace)):
        return False
    fa, fb = sim.userspace[i].fields, kvm.userspace[i].fields
    if not sim.userspace[i].reason == kvm.userspace[i].reason == "INTERNAL_ERROR":
        return False
    if (fa.get("suberror"), fa.get("ndata")) != (fb.get("suberror"), fb.get("ndata")) or not fa.get("data"):
        return False
    base = 3 if fa["data"][0] & EMULATION_FLAG_INSTRUCTION_BYTES else 1
    return (fa.get("suberror") == KVM_INTERNAL_ERROR_EMULATION and fa["data"][:base] == fb.get("data", [])[:base]
            and base <= j < base + 5 and fa.get("ndata") == base + 5)


def _vendor_labels(sim: RunResult, kvm: RunResult, module: str) -> list[str] | None:
    """Names of the vendor differences that explain every userspace/stop difference, or None."""
    ctx = DiffContext(sim=sim, kvm=kvm, insn=lambda rip: None)
    names: list[str] = []
    for path, a, b in diff_paths(sim, kvm, only=("stop.reason", "stop.code", "stop.suberror", "userspace")):
        vd = explain(module, path, a, b, ctx)
        if vd is not None:
            name = vd.name
        elif module == "kvm_pvm" and _exit_info_word(sim, kvm, path):
            name = "pvm-emulation-exit-info"
        else:
            return None
        if name not in names:
            names.append(name)
    return names


def diff_outcome(sim: RunResult, kvm: RunResult, module: str, mode: str) -> Outcome:
    """Agreement of one guest's two runs: "agree", a labelled vendor artefact, or where they part."""
    if streams_agree(sim, kvm):
        return Outcome("agree", "streams agree")
    a, b = classify(sim), classify(kvm)
    n = len(kvm.userspace) - 1
    if (module == "kvm_pvm" and b.label == "internal-error EMULATION" and a.label != b.label
            and sim.userspace[:n] == kvm.userspace[:n]):
        return Outcome("vendor", PVM_EMULATION_FAILURE, f"sim {a.label}; kvm failed on {failed_insn(kvm, mode)}")
    if a.kind == b.kind == "limit":
        n = min(len(sim.userspace), len(kvm.userspace))
        if sim.userspace[:n] == kvm.userspace[:n]:   # a limit cuts each stream at its own point
            return Outcome("limit", "both stopped at a limit, streams agree up to the shorter")
    if module == "kvm_pvm" and _rep_in_count(sim, kvm):
        return Outcome("vendor", PVM_REP_IN)
    if (names := _vendor_labels(sim, kvm, module)):
        return Outcome("vendor", f"{module} artefact: {', '.join(names)}")
    if a.label != b.label:
        return Outcome("differ", f"sim {a.label} / kvm {b.label}")
    i = next((i for i, (x, y) in enumerate(zip(sim.userspace, kvm.userspace)) if x != y),
             min(len(sim.userspace), len(kvm.userspace)))
    x, y = (r.userspace[i] if i < len(r.userspace) else None for r in (sim, kvm))
    sx, sy = (_short(e) if e is not None else "(none)" for e in (x, y))
    kind = f"{sx} fields" if sx == sy else f"sim {sx} / kvm {sy}"
    detail = f"exit #{i + 1}: sim {x.describe() if x else '(none)'} / kvm {y.describe() if y else '(none)'}"
    return Outcome("differ", f"same end ({a.label}), streams part: {kind}", detail)
