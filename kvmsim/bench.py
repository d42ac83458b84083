"""`make bench`: throughput of the paths that matter, each beside a baseline measured in the same run.

  PIO round trips/s   guest `out` loop: exit → handle_io → kvm_run → VMM → KVM_RUN → complete_fast_pio_out
  MMIO round trips/s  guest MMIO-read loop: EPT → emulator → userspace → NO_DECODE
                      Both loops, in A/B rounds (ab_figures), against: a small C VMM on /dev/kvm
                      (baseline/cvmm.c, built here with the system compiler), a minimal Python ctypes
                      loop on /dev/kvm (baseline/minloop.py), kvmsim's own real backend, and bare
                      unicorn (an OUT hook / an mmio_map callback, and a stop/restart per OUT): the floors
  native insns/s      guest ALU loop with no exits, vs bare unicorn on the same image
  emulated insns/s    decode + execute of an instruction mix (kvm/emulate alone)
  debugger cost       PIO round trips with the debugger attached and no breakpoints, vs the plain run
  tracing cost        PIO round trips with tracing off after a trace session (the probes patched in
                      and back out) vs never traced; with full stack capture on (every probe event's
                      call stack counted, bpftrace's @[kstack]); the peak heap of streaming a run's
                      events to a JSON Lines file at two run lengths (bounded: it does not grow)
  cost in run length  (--flat) a 1,000,000-exit run against 10,000-exit runs, PIO and MMIO
VM creation is never timed.  Real-KVM figures are added where /dev/kvm exists, the C VMM where a
C compiler does too; otherwise the figure says why not.  Timings are wall-clock on a shared
machine: the ratios, taken in the same rounds, are what count (the load is printed with them).
The note column starts with each figure's verdict against its target (issue 15's): met, MISSED
or not measured.  --json prints the whole as one document.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as U

from kvmsim import compiled
from kvmsim.compiled.guard import GUARD
from kvmsim.debug.engine import Debugger
from kvmsim.kvm.emulate.bench import bench_emulated_insns
from kvmsim.probe import PROBES
from kvmsim.scenario.guest_build import build_guest
from kvmsim.scenario.runner import kvm_probe, make_machine, run_machine
from kvmsim.scenario.schema import Scenario
from kvmsim.trace.events import JsonlWriter, Tap
from kvmsim.vmm import boot

PIO_ITERS = 20_000
NATIVE_ITERS = 3_000_000
MMIO_ITERS = 5_000
STREAM_ITERS = (1_000, 4_000)   # two run lengths: the peak heap must not grow with the run


_TARGET_RE = re.compile(r">=\s*(?P<num>[0-9][0-9,]*(?:\.[0-9]+)?)(?P<x>x)?\b.*")
_RANGE_RE = re.compile(r"(?P<lo>[0-9.]+)x\.\.(?P<hi>[0-9.]+)x")   # the ratio within [lo, hi]


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    note: str = ""
    samples: list[float] = field(default_factory=list)           # per A/B round
    baseline_samples: list[float] = field(default_factory=list)
    paired: float | None = None    # median of per-round ratios, where the figure came from A/B rounds

    @property
    def ratio(self) -> float | None:
        if self.paired is not None:
            return self.paired
        return self.value / self.baseline if self.value and self.baseline else None

    @property
    def verdict(self) -> str:
        """'met' or 'MISSED' against the target ('>= 100,000/s', or '>= 0.8x <baseline>' on the
        ratio); '' without a target, 'not measured' without a figure."""
        r = _RANGE_RE.fullmatch(self.target.strip())
        if r is not None:
            if self.ratio is None:
                return "not measured"
            return "met" if float(r["lo"]) <= self.ratio <= float(r["hi"]) else "MISSED"
        m = _TARGET_RE.fullmatch(self.target.strip())
        if m is None:
            return ""
        got = self.ratio if m["x"] else self.value
        if got is None:
            return "not measured"
        return "met" if got >= float(m["num"].replace(",", "")) else "MISSED"


def _scenario(source: str, defsym: dict[str, int], devices: list[dict] | None = None) -> Scenario:
    spec = {"name": "bench", "description": "benchmark", "guest": {"source": source, "mode": "long64",
                                                                    "defsym": defsym},
            "limits": {"max_exits": 10_000_000, "wall_seconds": 600, "max_guest_insns": None}}  # native speed
    if devices is not None:
        spec["devices"] = devices
    return Scenario.model_validate(spec)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


REPEAT = 3


def _loop_rate(scenario: Scenario, iters: int) -> float:
    """Round trips per second of one guest loop run; the VM is built outside the timing."""
    m = make_machine(scenario, "sim")
    try:
        return iters / _timed(lambda: run_machine(m))
    finally:
        m.close()


def _best_rate(make: Callable[[int], Scenario], iters: int) -> float:
    """A short warm-up run (first translations, caches), then the best of REPEAT runs — timeit's
    rule: the minimum time is the least disturbed by the rest of the machine."""
    _loop_rate(make(max(iters // 20, 10)), max(iters // 20, 10))
    return max(_loop_rate(make(iters), iters) for _ in range(REPEAT))


def sim_pio_round_trips(iters: int = PIO_ITERS) -> float:
    return _best_rate(lambda n: _scenario("guests/pio_loop.S", {"PIO_LOOP_COUNT": n}), iters)


def _bare(image, hook_out: bool, until_port: int = 0xF4) -> Uc:
    """Bare unicorn on the same work: same image and the same long-mode paging the VMM sets up
    (vmm/boot.py), an empty OUT hook that stops at the debug-exit port.  No kvmsim at all."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    ram = bytearray(4 << 20)
    boot.write_page_tables(boot._Ram(memoryview(ram), 0, "long64"))
    uc.mem_map(0, len(ram), UC_PROT_ALL)
    uc.mem_write(0, bytes(ram))
    uc.mem_write(image.load_addr, image.image)
    uc.reg_write(U.UC_X86_REG_CR3, boot.PML4_BASE)
    uc.reg_write(U.UC_X86_REG_CR4, boot.CR4_LONG64)
    uc.reg_write(U.UC_X86_REG_CR0, boot.CR0_LONG64)
    uc.reg_write(U.UC_X86_REG_RSP, 0x80000)

    def on_out(u: Uc, port: int, size: int, value: int, _: object) -> None:
        if port == until_port:
            u.emu_stop()

    uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, U.UC_X86_INS_OUT)
    return uc


def bare_pio_round_trips(iters: int = PIO_ITERS) -> float:
    image = build_guest(_repo("guests/pio_loop.S"), None, "long64", defines={"PIO_LOOP_COUNT": iters})
    uc = _bare(image, True)
    return iters / _timed(lambda: uc.emu_start(image.entry, 1 << 40))


def _native_sim_seconds(iters: int) -> float:
    m = make_machine(_scenario("guests/native_loop.S", {"NATIVE_LOOP_COUNT": iters}), "sim")
    try:
        return _timed(lambda: run_machine(m))
    finally:
        m.close()


def _native_bare_seconds(iters: int) -> float:
    image = build_guest(_repo("guests/native_loop.S"), None, "long64", defines={"NATIVE_LOOP_COUNT": iters})
    uc = _bare(image, False)
    return _timed(lambda: uc.emu_start(image.entry, 1 << 40))


def native_ratio(iters: int = NATIVE_ITERS) -> tuple[float, float]:
    """Steady-state guest instructions per second, kvmsim vs bare unicorn (4 per loop iteration).

    Each side runs the loop for `iters` and for 3*`iters` iterations; the slope between the two
    removes fixed costs (VM creation, first translations) that are not native speed.
    """
    def rate(seconds) -> float:
        small, big = min(seconds(iters) for _ in range(2)), min(seconds(3 * iters) for _ in range(2))
        return 4 * 2 * iters / max(big - small, 1e-9)
    return rate(_native_sim_seconds), rate(_native_bare_seconds)


def native_figure(rounds: int = 5, iters: int = NATIVE_ITERS) -> Figure:
    """native_ratio's slopes in A/B rounds, each side the best of 2 at both lengths; a round whose
    long run did not take clearly longer than its short one (a neighbour's burst) is dropped."""
    def slope(seconds_fn: Callable[[int], float]) -> float | None:
        small = min(seconds_fn(iters) for _ in range(2))
        big = min(seconds_fn(3 * iters) for _ in range(2))
        return 4 * 2 * iters / (big - small) if big > 1.5 * small else None

    sims: list[float] = []
    bares: list[float] = []
    for r in range(rounds + 1):             # round 0 warms up
        order = (_native_sim_seconds, _native_bare_seconds) if r % 2 == 0 else (_native_bare_seconds,
                                                                                  _native_sim_seconds)
        got = {fn: slope(fn) for fn in order}
        if r and got[_native_sim_seconds] and got[_native_bare_seconds]:
            sims.append(got[_native_sim_seconds])
            bares.append(got[_native_bare_seconds])
    f = Figure("native guest insns (sim)", _median(sims) if sims else None, "/s",
               _median(bares) if bares else None, "bare unicorn", ">= 0.9x bare",
               "" if sims else "every round disturbed", samples=sims, baseline_samples=bares)
    f.paired = paired_ratio(sims, bares)
    return f


def sim_mmio_round_trips(iters: int = MMIO_ITERS) -> float | None:
    devices = [{"type": "serial16550", "port": 0x3F8}, {"type": "debug-exit", "port": 0xF4},
               {"type": "regbank", "gpa": 0xD0000000, "size": 0x1000, "values": {0: 0x1234}}]
    return _best_rate(lambda n: _scenario("guests/mmio_loop.S", {"MMIO_LOOP_COUNT": n}, devices), iters)


class _StackCapture:
    """Full stack capture: every probe event counted by its call stack (bpftrace's @[kstack] = count())."""

    def __init__(self) -> None:
        self.stacks: Counter = Counter()

    def __call__(self, ev) -> None:
        self.stacks[(ev.stack, ev.name)] += 1


def traced_pio_round_trips(iters: int = PIO_ITERS // 4) -> float:
    """PIO round trips with full stack capture on (fewer iterations: it is the slow path)."""
    cap = _StackCapture()
    PROBES.subscribe(cap)
    try:
        return _best_rate(lambda n: _scenario("guests/pio_loop.S", {"PIO_LOOP_COUNT": n}), iters)
    finally:
        PROBES.unsubscribe(cap)


def pio_after_tracing(iters: int = PIO_ITERS) -> float:
    """PIO round trips once a trace session has come and gone: the probes must be patched back out."""
    cap = _StackCapture()
    PROBES.subscribe(cap)
    _loop_rate(_scenario("guests/pio_loop.S", {"PIO_LOOP_COUNT": 100}), 100)
    PROBES.unsubscribe(cap)
    return sim_pio_round_trips(iters)


def stream_peak_heap(iters: int) -> float:
    """Peak Python heap (KiB, tracemalloc) while a PIO loop of `iters` exits streams every probe event
    to a JSON Lines file; the VM is built before the measurement starts."""
    m = make_machine(_scenario("guests/pio_loop.S", {"PIO_LOOP_COUNT": iters}), "sim")
    m.vmm.config.keep_exits = 100     # the VMM's own exit log bounded below both run lengths
    fd, path = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    try:
        with open(path, "w") as f:
            tap = Tap([JsonlWriter(f)])
            tracemalloc.start()
            PROBES.subscribe(tap)
            try:
                run_machine(m)
            finally:
                PROBES.unsubscribe(tap)
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        return peak / 1024
    finally:
        m.close()
        os.unlink(path)


def emulated_insns() -> float | None:
    return bench_emulated_insns(2.0)


def _attached_rate(iters: int) -> float:
    """Round trips per second of one PIO loop run under the debugger (no breakpoints)."""
    dbg = Debugger(_scenario("guests/pio_loop.S", {"PIO_LOOP_COUNT": iters}))
    try:
        dbg.start()
        t0 = time.perf_counter()
        stop = dbg.cont()
        dt = time.perf_counter() - t0
        if stop.kind != "end":
            raise RuntimeError(f"the attached run stopped: {stop.text}")
        return iters / dt
    finally:
        dbg.close()


def debug_pio_round_trips(iters: int = PIO_ITERS) -> float:
    """The debugger's cost: best of REPEAT attached runs after a short warm-up (as _best_rate)."""
    _attached_rate(max(iters // 20, 10))
    return max(_attached_rate(iters) for _ in range(REPEAT))


def _repo(rel: str):
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / rel


# ---------------------------------------------------------------- real /dev/kvm figures
# Both loops run through the same userspace code as the simulation (runner.make_machine, the vmm/
# run loop and devices), so the ratio sim : real compares the kernels, not two VMMs:
#   real_pio_round_trips   guests/pio_loop.S:  `out %al, $0x80` N times (unclaimed port)
#   real_mmio_round_trips  guests/mmio_loop.S: `movl (%rbx), %eax` from GPA 0xd0000000 N times
#                          (a regbank device answers, as in the sim figure)
# Each runs a short calibration, then a loop sized to last about `seconds`.  On kvm_pvm every guest
# instruction is emulated, so these are emulator-bound figures.

REAL_CALIBRATION_ITERS = 2_000
REAL_MAX_ITERS = 5_000_000
REAL_MMIO_GPA = 0xD0000000


def _real_scenario(source: str, devices: list[dict]) -> Scenario:
    return Scenario.model_validate({
        "name": "bench-real", "description": "real-KVM benchmark loop",
        "guest": {"source": str(_repo("guests") / source), "mode": "long64"}, "devices": devices,
        "limits": {"max_exits": REAL_MAX_ITERS + 10, "wall_seconds": 600}})


def _real_rate(source: str, devices: list[dict], iters: int) -> tuple[float, int]:
    """Run the loop `iters` times on /dev/kvm: (round trips per second, userspace exits seen)."""
    m = make_machine(_real_scenario(source, devices), "kvm")
    try:
        regs = m.vcpu.get_regs()
        regs.rcx = iters            # the loops take their count from RCX (see the guests)
        m.vcpu.set_regs(regs)
        t0 = time.perf_counter()
        stop = m.vmm.run()
        dt = time.perf_counter() - t0
    finally:
        m.close()
    if stop.reason != "debug-exit":
        raise RuntimeError(f"{source} on /dev/kvm stopped with {stop.reason} ({stop.detail})")
    exits = m.vmm.exit_count - 1    # the last one is the EXIT port write
    return exits / dt if dt > 0 else 0.0, exits


def _real_measure(source: str, devices: list[dict], seconds: float) -> float:
    rate, _ = _real_rate(source, devices, REAL_CALIBRATION_ITERS)
    iters = max(REAL_CALIBRATION_ITERS, min(REAL_MAX_ITERS, int(rate * seconds)))
    rate, exits = _real_rate(source, devices, iters)
    if exits != iters:
        raise RuntimeError(f"{source}: expected {iters} round trips, saw {exits}")
    return rate


def real_pio_round_trips(seconds: float = 1.0) -> float:
    """Guest OUT → KVM_EXIT_IO → VMM → KVM_RUN, per second, on /dev/kvm."""
    return _real_measure("pio_loop.S", [{"type": "debug-exit", "port": 0xF4}], seconds)


def real_mmio_round_trips(seconds: float = 1.0) -> float:
    """Guest MMIO read → KVM_EXIT_MMIO → VMM device → KVM_RUN, per second, on /dev/kvm."""
    return _real_measure("mmio_loop.S", [
        {"type": "debug-exit", "port": 0xF4},
        {"type": "regbank", "gpa": REAL_MMIO_GPA, "size": 0x1000, "values": {0: 0x1234}}], seconds)


def _real(fn: Callable[[float], float], seconds: float) -> tuple[float | None, str]:
    """A real-KVM figure, or None and why not (no usable /dev/kvm, or the loop failed)."""
    ok, why = kvm_probe()
    if not ok:
        return None, why
    try:
        return fn(seconds), ""
    except Exception as e:  # noqa: BLE001 - report, do not crash the bench
        return None, f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- A/B rounds (issue 15)
# Each group runs its contenders in turn, ROUNDS times, the order reversed every other round so
# neither side always runs first after the other's noise; after one unrecorded warm-up round.
# A figure is the median of its rounds, and its ratio the median of the per-round ratios (the
# pair ran seconds apart, under the same load): on a shared machine only the ratios are stable.

ROUNDS = 5
AB_REAL_ITERS = 40_000        # real-KVM loops: ~0.4 s each at ~100k/s
AB_SIM_PIO_ITERS = 20_000
AB_SIM_MMIO_ITERS = 8_000
AB_BARE_ITERS = 200_000
FLAT_SHORT, FLAT_LONG = 10_000, 1_000_000


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def ab_rounds(contenders: dict[str, Callable[[], float]], rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Rates of each contender, `rounds` times, alternating the order; a contender that fails or is
    unavailable returns None and is dropped from that round on."""
    names = list(contenders)
    for name in names:          # warm-up: first translations, guest builds, the C VMM's build
        contenders[name]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(contenders[name]())
    return out


def paired_ratio(a: list[float], b: list[float]) -> float | None:
    """Median of the per-round ratios a/b."""
    rs = [x / y for x, y in zip(a, b) if x and y]
    return _median(rs) if rs else None


def _sim_rate(make: Callable[[], Scenario], iters: int) -> Callable[[], float]:
    return lambda: _loop_rate(make(), iters)


def _bare_pio_rate(iters: int) -> Callable[[], float]:
    image = build_guest(_repo("guests/pio_loop.S"), None, "long64", defines={"PIO_LOOP_COUNT": iters})

    def rate() -> float:
        uc = _bare(image, True)
        return iters / _timed(lambda: uc.emu_start(image.entry, 1 << 40))
    return rate


def _bare_restart_rate(iters: int) -> Callable[[], float]:
    """Bare unicorn stopped at every OUT and started again (what a sim exit costs unicorn alone)."""
    image = build_guest(_repo("guests/pio_loop.S"), None, "long64", defines={"PIO_LOOP_COUNT": iters})

    def rate() -> float:
        uc = _bare(image, True, until_port=0x80)
        pc = image.entry

        def loop() -> None:
            nonlocal pc
            for _ in range(iters):
                uc.emu_start(pc, 1 << 40)
                pc = uc.reg_read(U.UC_X86_REG_RIP)
        return iters / _timed(loop)
    return rate


def _bare_switch_rate(iters: int) -> Callable[[], float] | None:
    """Bare unicorn suspended inside its OUT hook on a greenlet and resumed by the next "KVM_RUN":
    what an exit would cost unicorn if the sim did not stop and restart it (None without greenlet)."""
    try:
        import greenlet   # optional: only this floor needs it (not a kvmsim dependency)
    except ImportError:
        return None
    image = build_guest(_repo("guests/pio_loop.S"), None, "long64", defines={"PIO_LOOP_COUNT": iters})

    def rate() -> float:
        uc = _bare(image, False)
        main = greenlet.getcurrent()

        def on_out(u: Uc, port: int, size: int, value: int, _: object) -> None:
            if port == 0x80:
                main.switch(port)                    # the exit: the guest waits inside its hook
        uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, U.UC_X86_INS_OUT)
        guest = greenlet.greenlet(lambda: uc.emu_start(image.entry, 1 << 40))
        t0 = time.perf_counter()
        while guest.switch() is not None:            # each switch back in is the next KVM_RUN
            pass
        return iters / (time.perf_counter() - t0)
    return rate


def _bare_mmio_rate(iters: int) -> Callable[[], float]:
    """Bare unicorn's MMIO floor: the same loop, the read answered by a unicorn mmio_map callback."""
    image = build_guest(_repo("guests/mmio_loop.S"), None, "long64", defines={"MMIO_LOOP_COUNT": iters})

    def rate() -> float:
        uc = _bare(image, True)
        uc.mmio_map(REAL_MMIO_GPA, 0x1000, lambda u, off, size, data: 0x1234, None, None, None)
        return iters / _timed(lambda: uc.emu_start(image.entry, 1 << 40))
    return rate


class _RealContenders:
    """The three real-/dev/kvm runs of one guest loop, from the same kvmsim-made boot state:
    kvmsim's own backend (vmm/ run loop over realkvm/), the minimal ctypes loop, the C VMM."""

    def __init__(self, source: str, devices: list[dict], iters: int) -> None:
        from kvmsim.baseline.cvmm import build   # per use: the baselines load only where /dev/kvm is
        self.source, self.devices, self.iters = source, devices, iters
        self.cvmm, self.cvmm_why = build()

    def backend(self) -> float:
        rate, exits = _real_rate(self.source, self.devices, self.iters)
        if exits != self.iters:
            raise RuntimeError(f"{self.source}: expected {self.iters} round trips, saw {exits}")
        return rate

    def minloop(self) -> float:
        from kvmsim.baseline.minloop import run_minloop   # per use, as above
        with make_machine(_real_scenario(self.source, self.devices), "kvm") as m:
            rate, n = run_minloop(m, self.iters)
        if n != self.iters:
            raise RuntimeError(f"minimal loop: expected {self.iters} round trips, saw {n}")
        return rate

    def c_vmm(self) -> float:
        from kvmsim.baseline.cvmm import run_cvmm   # per use, as above
        assert self.cvmm is not None
        with make_machine(_real_scenario(self.source, self.devices), "kvm") as m:
            rate, n = run_cvmm(self.cvmm, m, self.iters)
        if n != self.iters:
            raise RuntimeError(f"C VMM: expected {self.iters} round trips, saw {n}")
        return rate


_PIO_DEVICES = [{"type": "debug-exit", "port": 0xF4}]
_MMIO_DEVICES = [{"type": "debug-exit", "port": 0xF4},
                 {"type": "regbank", "gpa": REAL_MMIO_GPA, "size": 0x1000, "values": {0: 0x1234}}]


def _sim_mmio_scenario(n: int) -> Scenario:
    devices = [{"type": "serial16550", "port": 0x3F8}] + _MMIO_DEVICES
    return _scenario("guests/mmio_loop.S", {"MMIO_LOOP_COUNT": n}, devices)


def _sim_pio_scenario(n: int) -> Scenario:
    return _scenario("guests/pio_loop.S", {"PIO_LOOP_COUNT": n})


def _group(kind: str, rounds: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """One loop's A/B rounds: sim, bare unicorn floor, and (where usable) the three real-KVM runs."""
    if kind == "pio":
        sim = _sim_rate(lambda: _sim_pio_scenario(AB_SIM_PIO_ITERS), AB_SIM_PIO_ITERS)
        bare, source, devices = _bare_pio_rate(AB_BARE_ITERS), "pio_loop.S", _PIO_DEVICES
    else:
        sim = _sim_rate(lambda: _sim_mmio_scenario(AB_SIM_MMIO_ITERS), AB_SIM_MMIO_ITERS)
        bare, source, devices = _bare_mmio_rate(AB_BARE_ITERS // 4), "mmio_loop.S", _MMIO_DEVICES
    contenders: dict[str, Callable[[], float]] = {"sim": sim, "bare": bare}
    why: dict[str, str] = {}
    if kind == "pio":
        contenders["restart"] = _bare_restart_rate(AB_SIM_PIO_ITERS)
        switch = _bare_switch_rate(AB_SIM_PIO_ITERS)
        if switch is not None:
            contenders["switch"] = switch
        else:
            why["switch"] = "greenlet not installed (pip install greenlet)"
    ok, kvm_why = kvm_probe()
    if ok:
        real = _RealContenders(source, devices, AB_REAL_ITERS)
        contenders["backend"], contenders["minloop"] = real.backend, real.minloop
        if real.cvmm is not None:
            contenders["cvmm"] = real.c_vmm
        else:
            why["cvmm"] = real.cvmm_why
    else:
        why["backend"] = why["minloop"] = why["cvmm"] = kvm_why
    try:
        return ab_rounds(contenders, rounds), why
    except Exception as e:  # noqa: BLE001 - a real-KVM failure is reported, the sim figures still run
        err = f"{type(e).__name__}: {e}"
        for n in ("backend", "minloop", "cvmm"):
            contenders.pop(n, None)
            why.setdefault(n, err)
        return ab_rounds(contenders, rounds), why


def _ab_figure(name: str, runs: dict[str, list[float]], a: str, b: str | None, baseline_name: str = "",
               target: str = "", note: str = "") -> Figure:
    """Figure of contender a (median), against b (median, ratio = median of per-round ratios)."""
    va = runs.get(a)
    vb = runs.get(b) if b else None
    f = Figure(name, _median(va) if va else None, "/s", _median(vb) if vb else None, baseline_name, target,
               note, samples=va or [], baseline_samples=vb or [])
    if va and vb:
        f.paired = paired_ratio(va, vb)
    return f


def ab_figures(rounds: int = ROUNDS) -> list[Figure]:
    """The round-trip figures of issue 15, each against its baseline, from A/B rounds."""
    figs = []
    for kind, label, target in (("pio", "PIO", ">= 1.0x C VMM"), ("mmio", "MMIO", ">= 0.5x C VMM")):
        runs, why = _group(kind, rounds)
        figs.append(_ab_figure(f"{label} round trips (sim)", runs, "sim", "cvmm", "C VMM", target,
                               why.get("cvmm", "")))
        figs.append(_ab_figure(f"{label} round trips (sim)", runs, "sim", "bare", "bare unicorn "
                               + ("OUT hook" if kind == "pio" else "mmio_map"), note="unicorn's own floor"))
        if kind == "pio":
            figs.append(_ab_figure("PIO round trips (sim)", runs, "sim", "restart",
                                   "bare unicorn stop/restart per OUT", note="the floor with unicorn stopped per exit"))
            figs.append(_ab_figure("bare unicorn, greenlet switch per OUT", runs, "switch", "restart",
                                   "stop/restart per OUT", note=why.get("switch", "the floor without a stop per exit")))
        figs.append(_ab_figure(f"{label} round trips (C VMM, /dev/kvm)", runs, "cvmm", None, note=why.get("cvmm", "")))
        figs.append(_ab_figure(f"{label} round trips (minimal ctypes loop, /dev/kvm)", runs, "minloop", "cvmm",
                               "C VMM", note=why.get("minloop", "")))
        figs.append(_ab_figure(f"{label} round trips (kvmsim real backend)", runs, "backend", "minloop",
                               "minimal loop", ">= 0.9x minimal loop", why.get("backend", "")))
    return figs


def _cpu_rate(scenario: Scenario, iters: int) -> float:
    """Round trips per CPU second (this process's) of one loop run: on a shared machine the wall
    clock measures the neighbours too, and the question here is our own cost per exit."""
    m = make_machine(scenario, "sim")
    try:
        t0 = time.process_time()
        run_machine(m)
        return iters / (time.process_time() - t0)
    finally:
        m.close()


def flat_figures(short: int = FLAT_SHORT, long: int = FLAT_LONG) -> list[Figure]:
    """Cost flat in run length: round trips per CPU second of one `long` run against `short` runs
    (the median of two before it and two after it)."""
    figs = []
    for label, make in (("PIO", _sim_pio_scenario), ("MMIO", _sim_mmio_scenario)):
        _cpu_rate(make(short), short)
        shorts = [_cpu_rate(make(short), short) for _ in range(2)]
        big = _cpu_rate(make(long), long)
        shorts += [_cpu_rate(make(short), short) for _ in range(2)]
        figs.append(Figure(f"{label} round trips per CPU second (sim, {long:,}-exit run)", big, "/s",
                           _median(shorts), f"{short:,}-exit runs", "0.9x..1.1x", samples=[big],
                           baseline_samples=shorts))
    return figs


def collect(rounds: int = ROUNDS, flat: bool = False) -> list[Figure]:
    figs = ab_figures(rounds)
    pio = next(f.value for f in figs if f.name == "PIO round trips (sim)")
    figs.append(native_figure(rounds))
    figs.append(Figure("PIO round trips (debugger attached, no breakpoints)", debug_pio_round_trips(), "/s", pio,
                       "sim", ">= 0.5x sim"))
    off_again = pio_after_tracing()
    figs.append(Figure("PIO round trips (sim, tracing off after a session)", off_again, "/s", pio,
                       "never traced", ">= 0.95x never traced"))
    traced = traced_pio_round_trips()
    figs.append(Figure("PIO round trips (sim, full stack capture on)", traced, "/s", pio, "tracing off",
                       ">= 25,000/s"))
    small, big = STREAM_ITERS
    heap_small, heap_big = stream_peak_heap(small), stream_peak_heap(big)
    figs.append(Figure(f"trace stream peak heap ({big:,} exits to a file)", heap_big, " KiB", heap_small,
                       f"{small:,} exits", note="bounded" if heap_big < 1.5 * heap_small else
                       "grows with the run: not bounded"))
    emu = emulated_insns()
    figs.append(Figure("emulated insns (decode+execute)", emu, "/s", target=">= 200,000/s",
                       note="" if emu else "kvm/emulate/bench.py missing"))
    if flat:
        figs += flat_figures()
    return figs


def format_figures(figs: list[Figure]) -> str:
    rows = []
    for f in figs:
        val = f"{f.value:,.0f}{f.unit}" if f.value else "n/a"
        ratio = f"{f.ratio:.2f}x {f.baseline_name}" if f.ratio else ""
        base = f"{f.baseline:,.0f}{f.unit}" if f.baseline else ""
        note = "; ".join(x for x in (f.verdict, f.note) if x)
        rows.append((f.name, val, base, ratio, f.target, note))
    widths = [max(len(r[i]) for r in rows + [("figure", "value", "baseline", "ratio", "target", "note")])
              for i in range(6)]
    head = ("figure", "value", "baseline", "ratio", "target", "note")
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def machine_load() -> dict:
    """The load the figures were taken under (the machine is shared: ratios are what count)."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        uptime = ""
    return {"loadavg": list(os.getloadavg()), "cpus": os.cpu_count(), "uptime": uptime}


def _commit() -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(_repo(".")), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None


def compiled_state() -> tuple[list[str] | str, str]:
    """Which code the figures ran on: the compiled modules imported (kvmsim/compiled/), or "pure"; and
    why the compiled path is off (KVMSIM_PURE, not built, a stale module), empty when it is on."""
    GUARD.decide()
    return compiled.loaded() or "pure", GUARD.why


def compiled_line() -> str:
    mods, why = compiled_state()
    if mods != "pure":
        return f"compiled path: {len(mods)} of {len(compiled.MODULES)} modules"
    return f"pure Python ({why or 'no compiled module imported'})"


def to_json(figs: list[Figure], rounds: int, load_before: dict, load_after: dict) -> dict:
    """The bench as one JSON document, so figures can be tracked across commits."""
    mods, why = compiled_state()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": _commit(), "rounds": rounds,
        "load_before": load_before, "load_after": load_after,
        "compiled": mods, "compiled_why": why,   # what the figures ran on
        "figures": [{"name": f.name, "value": f.value, "unit": f.unit.strip(), "baseline": f.baseline,
                     "baseline_name": f.baseline_name, "ratio": f.ratio, "target": f.target,
                     "verdict": f.verdict, "note": f.note, "samples": f.samples,
                     "baseline_samples": f.baseline_samples} for f in figs]}


def main(json_out: bool = False, rounds: int = ROUNDS, flat: bool = False) -> int:
    load_before = machine_load()
    figs = collect(rounds, flat)
    load_after = machine_load()
    if json_out:
        print(json.dumps(to_json(figs, rounds, load_before, load_after), indent=1))
    else:
        print(format_figures(figs))
        print(f"A/B rounds: {rounds}; load before: {load_before['uptime']}; after: {load_after['uptime']}")
        print(compiled_line())
    return 0
