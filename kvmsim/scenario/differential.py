"""Sim vs the real /dev/kvm on one scenario (`kvmsim diff`): what must agree, and where it does not.

Compared (result.BACKEND_AGREED): stop reason/code/suberror, the userspace exit stream with
every kvm_run field, serial output, final registers, `expect.memory` ranges and device
counters.  Not compared: VMX exit and EMULTYPE counts, injected exceptions, guest instruction
counts (result.SIM_ONLY: the model's own facts), the scenario's `host_dependent` paths, and
host tracepoints.  A difference that the host's vendor module explains (scenario/vendor.py)
is labelled with the explanation, and so are final RFLAGS bits that the last instruction to
touch them left architecturally undefined (last_writer.py, the SDM's table in
undefined_flags.py), as Xen's emulator harness masks them; only unexplained differences make
a scenario DIFF.

    1. skip a scenario whose `backends` lack sim or kvm (the reason is its YAML comment);
    2. run it on both backends;
    3. diff the agreed fields; sort each difference into host_dependent / undefined flags /
       vendor / divergence;
    4. on a divergence, find the first one (a userspace exit index, else the first field),
       replay both backends up to that exit to get RIP there, and disassemble the guest
       instruction at the sim's RIP (capstone) with its symbol (GuestImage.symbolize);
    5. lay out the final-register comparison.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs, CsError

from kvmsim.hw.paging import EFER_LMA, X86_CR0_PE
from kvmsim.scenario import runner   # as a module: run_scenario is looked up per call (tests stand in a spy)
from kvmsim.scenario.guest_build import GuestImage
from kvmsim.scenario.last_writer import FlagWriters, UndefinedFlags
from kvmsim.scenario.result import BACKEND_AGREED, RunResult, diff_paths, path_under
from kvmsim.scenario.schema import Scenario
from kvmsim.scenario.vendor import DiffContext, VendorDifference, explain

REG_ORDER = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")
_CS_MODE = {"real16": CS_MODE_16, "prot32": CS_MODE_32, "long64": CS_MODE_64, "reset": CS_MODE_16}

Runner = Callable[..., RunResult]  # runner.run_scenario's signature


@dataclass
class Difference:
    path: str
    sim: Any
    kvm: Any
    vendor: VendorDifference | None = None   # when the host's vendor module accounts for it
    undefined: list[UndefinedFlags] = field(default_factory=list)   # RFLAGS bits the SDM leaves undefined


@dataclass
class Divergence:
    """The first place sim and kvm part ways."""

    where: str                   # "userspace exit #5", "stop", "serial", "regs", ...
    index: int | None            # 0-based userspace exit index, if the streams part there
    sim: str                     # the sim side's fields there
    kvm: str
    sim_rip: int | None = None   # RIP at that exit (replayed) or at the end
    kvm_rip: int | None = None
    insn: str = ""               # "0x100012 <serial_putc+0x5>: out dx, al" at the sim's RIP


@dataclass
class Comparison:
    scenario: str
    status: str                  # MATCH | DIFF | SKIP | ERROR
    host: str = ""
    reason: str = ""             # SKIP / ERROR: why
    differences: list[Difference] = field(default_factory=list)   # unexplained
    vendor: list[Difference] = field(default_factory=list)        # labelled vendor differences
    undefined: list[Difference] = field(default_factory=list)     # labelled undefined-flag differences
    ignored: list[str] = field(default_factory=list)              # host_dependent paths that differed
    divergence: Divergence | None = None
    registers: list[tuple[str, Any, Any, str]] = field(default_factory=list)  # name, sim, kvm, mark
    exits: tuple[int, int] = (0, 0)                               # userspace exits: sim, kvm

    @property
    def compared(self) -> bool:
        return self.status in ("MATCH", "DIFF")


# ---------------------------------------------------------------- guest instructions

class GuestCode:
    """Disassembly of the guest image for humans and for vendor predicates."""

    def __init__(self, image: GuestImage) -> None:
        self.image = image
        self._cs = Cs(CS_ARCH_X86, _CS_MODE[image.mode])
        self.flag_writers = FlagWriters(image)

    def insn(self, rip: int) -> tuple[int, str, str] | None:
        """(length, mnemonic, "mnemonic operands") at RIP, or None outside the image.

        Simplified: reads the built image, not guest RAM (no scenario modifies its code), and
        takes RIP as the linear address (boot.py's segments all have base 0; a "reset" image
        runs with the reset CS base 0xffff0000, its load address, under a 16-bit IP).
        """
        if self.image.mode == "reset" and rip < 0x10000:
            rip += self.image.load_addr
        off = rip - self.image.load_addr
        if not 0 <= off < len(self.image.image):
            return None
        try:
            i = next(self._cs.disasm(self.image.image[off:off + 15], rip, 1), None)
        except CsError:
            return None
        return None if i is None else (i.size, i.mnemonic, f"{i.mnemonic} {i.op_str}".strip())

    def describe(self, rip: int | None) -> str:
        if rip is None:
            return "(no RIP)"
        i = self.insn(rip)
        return f"{rip:#x} <{self.image.symbolize(rip)}>: {i[2] if i else '(outside the guest image)'}"


# ---------------------------------------------------------------- the comparison

def skip_reason(sc: Scenario) -> str | None:
    """Why `diff` does not compare this scenario, or None."""
    missing = [b for b in ("sim", "kvm") if b not in sc.backends]
    if not missing:
        return None
    why = f"backends [{', '.join(sc.backends)}]"
    note = _yaml_comment(sc, "backends")
    return f"{why}: {note}" if note else why


def _yaml_comment(sc: Scenario, key: str) -> str:
    line = sc.line_of(key)
    if sc.path is None or line is None:
        return ""
    try:
        text = sc.path.read_text().splitlines()[line - 1]
    except (OSError, IndexError):
        return ""
    return text.split("#", 1)[1].strip() if "#" in text else ""


def compare(sc: Scenario, sim: RunResult, kvm: RunResult, module: str, code: GuestCode,
            replay: Callable[[str, int], int | None] | None = None) -> Comparison:
    """Steps 3-5 of the module docstring on two finished runs."""
    ctx = DiffContext(sim=sim, kvm=kvm, insn=lambda rip: (i[0], i[1]) if (i := code.insn(rip)) else None)
    c = Comparison(sc.name, "MATCH", host=module, exits=(len(sim.userspace), len(kvm.userspace)))
    for path, a, b in diff_paths(sim, kvm, only=BACKEND_AGREED):
        if path_under(path, sc.host_dependent):
            c.ignored.append(path)
            continue
        undef = undefined_flags(path, a, b, sim, kvm, code)
        ma, mb = a, b   # what is left to explain once the undefined flags are dropped
        if undef:
            c.undefined.append(Difference(path, a, b, undefined=undef))
            dropped = sum(u.mask for u in undef)
            ma, mb = a & ~dropped, b & ~dropped
            if ma == mb:
                continue
        if (vd := explain(module, path, ma, mb, ctx)) is not None:
            c.vendor.append(Difference(path, a, b, vd))
        else:
            c.differences.append(Difference(path, a, b))
    labelled = ({d.path: "undefined" for d in c.undefined} | {d.path: "vendor" for d in c.vendor}
                | {p: "host_dependent" for p in c.ignored})
    if c.differences:
        c.status = "DIFF"
        c.divergence = first_divergence(c.differences, sim, kvm, code, replay)
        wrong = {d.path for d in c.differences}
        c.registers = [(r, sim.regs.get(r), kvm.regs.get(r),
                        "DIFF" if f"regs.{r}" in wrong else labelled.get(f"regs.{r}", ""))
                       for r in REG_ORDER if r in sim.regs or r in kvm.regs]
    return c


def undefined_flags(path: str, sim_value: Any, kvm_value: Any, sim: RunResult, kvm: RunResult,
                    code: GuestCode) -> list[UndefinedFlags]:
    """The differing final RFLAGS bits that the last guest instruction to touch them left undefined.

    The walk starts at the sim's final RIP.  A kvm RIP further on is accepted only when the one
    instruction between them leaves the status flags alone (kvm_pvm retires the OUT it stopped
    on); the CL count of a shift by CL is the final RCX, when both sides report the same.
    """
    if path != "regs.rflags" or not (isinstance(sim_value, int) and isinstance(kvm_value, int)):
        return []
    sim_rip, kvm_rip = sim.regs.get("rip"), kvm.regs.get("rip")
    if sim_rip is None or (kvm_rip != sim_rip and not code.flag_writers.passes_flags(sim_rip, kvm_rip)):
        return []
    if any(_cpu_mode(r) not in (None, code.image.mode) for r in (sim, kvm)):
        return []   # the guest switched modes: the image would be decoded in the wrong one
    rcx = sim.regs.get("rcx") if sim.regs.get("rcx") == kvm.regs.get("rcx") else None
    after_hlt = sim.stop.reason == kvm.stop.reason == "hlt"
    differing = sim_value ^ kvm_value
    return [replace(u, mask=u.mask & differing) for u in code.flag_writers.undefined_at(sim_rip, rcx, after_hlt)
            if u.mask & differing]


def _cpu_mode(r: RunResult) -> str | None:
    """The mode the final CR0.PE/EFER.LMA say (CS.L/D are not in a RunResult), None if not reported."""
    cr0, efer = r.sregs.get("cr0"), r.sregs.get("efer")
    if cr0 is None or efer is None:
        return None
    return "long64" if efer & EFER_LMA else "prot32" if cr0 & X86_CR0_PE else "real16"


def first_divergence(diffs: list[Difference], sim: RunResult, kvm: RunResult, code: GuestCode,
                     replay: Callable[[str, int], int | None] | None) -> Divergence:
    """The first userspace exit that differs (either side may have none there), else the first field."""
    idx = next((int(d.path.split(".")[1]) for d in diffs if d.path.startswith("userspace.")
                and d.path.split(".")[1].isdigit()), None)
    if idx is None and any(d.path == "userspace.len" for d in diffs):
        idx = min(len(sim.userspace), len(kvm.userspace))
    if idx is not None:
        sim_rip = _rip_at(replay, "sim", idx, sim)
        kvm_rip = _rip_at(replay, "kvm", idx, kvm)
        return Divergence(f"userspace exit #{idx + 1}", idx, _exit_text(sim, idx), _exit_text(kvm, idx),
                          sim_rip, kvm_rip, code.describe(sim_rip))
    d = diffs[0]
    where = d.path.split(".")[0] if not d.path.startswith("stop.") else "stop"
    sim_rip, kvm_rip = sim.regs.get("rip"), kvm.regs.get("rip")
    return Divergence(where, None, f"{d.path} = {_show(d.sim)}", f"{d.path} = {_show(d.kvm)}",
                      sim_rip, kvm_rip, code.describe(sim_rip))


def _rip_at(replay: Callable[[str, int], int | None] | None, backend: str, idx: int, r: RunResult) -> int | None:
    """RIP when exit idx reached userspace (a replay stopped there), or the final RIP if it has no such exit."""
    if idx >= len(r.userspace):
        return r.regs.get("rip")
    return replay(backend, idx) if replay is not None else None


def _exit_text(r: RunResult, idx: int) -> str:
    if idx < len(r.userspace):
        return r.userspace[idx].describe()
    s = r.stop
    return f"(no exit: the run stopped after {len(r.userspace)} with {s.reason}" + (
        f" code={s.code:#x}" if s.code is not None else "") + (f", {s.detail}" if s.detail else "") + ")"


def _show(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int):
        return repr(v)
    return hex(v) if v > 9 else str(v)


# ---------------------------------------------------------------- running both

def diff_scenario(sc: Scenario, module: str, run: Runner | None = None) -> Comparison:
    """Steps 1-5: run `sc` on sim and kvm and compare.  BackendError and ScenarioError propagate."""
    if (why := skip_reason(sc)) is not None:
        return Comparison(sc.name, "SKIP", host=module, reason=why)
    run = run or functools.partial(runner.run_scenario, keep_exits=None)   # the streams are compared whole
    sim = run(sc, backend="sim")
    kvm = run(sc, backend="kvm", host_events=False)

    def replay(backend: str, idx: int) -> int | None:
        r = run(sc, backend=backend, max_exits=idx + 1, **({"host_events": False} if backend == "kvm" else {}))
        return r.regs.get("rip") if len(r.userspace) == idx + 1 else None

    return compare(sc, sim, kvm, module, GuestCode(runner.build_image(sc)), replay)

