"""Real-/dev/kvm figures for `make bench` (kvmsim/bench.py prints them beside the simulated ones).

Both loops run through the same userspace code as the simulation (runner.make_machine, the
vmm/ run loop and devices), so the ratio sim : real compares the kernels, not two VMMs:

    real_pio_round_trips(s)   guests/pio_loop.S:  `out %al, $0x80` N times (unclaimed port)
    real_mmio_round_trips(s)  guests/mmio_loop.S: `movl (%rbx), %eax` from GPA 0xd0000000 N times
                              (a regbank device answers, as in the sim figure)

Each runs a short calibration, then a loop sized to last about `seconds`, and returns round
trips (userspace exits) per second, or None when /dev/kvm is not usable (`unavailable_reason()`
says why).  On kvm_pvm every guest instruction is emulated, so these are emulator-bound figures.
"""

from __future__ import annotations

import time
from pathlib import Path

CALIBRATION_ITERS = 2_000
MAX_ITERS = 5_000_000
MMIO_GPA = 0xD0000000
GUESTS = Path(__file__).resolve().parents[2] / "guests"


def unavailable_reason() -> str | None:
    from kvmsim.scenario.runner import kvm_probe

    ok, why = kvm_probe()
    return None if ok else why


def _scenario(source: str, devices: list[dict]):
    from kvmsim.scenario.schema import Scenario

    return Scenario.model_validate({
        "name": "bench-real", "description": "real-KVM benchmark loop",
        "guest": {"source": str(GUESTS / source), "mode": "long64"}, "devices": devices,
        "limits": {"max_exits": MAX_ITERS + 10, "wall_seconds": 600}})


def _rate(source: str, devices: list[dict], iters: int) -> tuple[float, int]:
    """Run the loop `iters` times on /dev/kvm: (round trips per second, userspace exits seen)."""
    from kvmsim.scenario.runner import make_machine

    m = make_machine(_scenario(source, devices), "kvm")
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


def _measure(source: str, devices: list[dict], seconds: float) -> float | None:
    if unavailable_reason() is not None:
        return None
    rate, _ = _rate(source, devices, CALIBRATION_ITERS)
    iters = max(CALIBRATION_ITERS, min(MAX_ITERS, int(rate * seconds)))
    rate, exits = _rate(source, devices, iters)
    if exits != iters:
        raise RuntimeError(f"{source}: expected {iters} round trips, saw {exits}")
    return rate


def real_pio_round_trips(seconds: float = 1.0) -> float | None:
    """Guest OUT → KVM_EXIT_IO → VMM → KVM_RUN, per second, on /dev/kvm (None without it)."""
    return _measure("pio_loop.S", [{"type": "debug-exit", "port": 0xF4}], seconds)


def real_mmio_round_trips(seconds: float = 1.0) -> float | None:
    """Guest MMIO read → KVM_EXIT_MMIO → VMM device → KVM_RUN, per second, on /dev/kvm (None without it)."""
    return _measure("mmio_loop.S", [
        {"type": "debug-exit", "port": 0xF4},
        {"type": "regbank", "gpa": MMIO_GPA, "size": 0x1000, "values": {0: 0x1234}}], seconds)
