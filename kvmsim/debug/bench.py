"""The debugger's cost: a PIO loop with the debugger attached and no breakpoints, vs the plain run."""

from __future__ import annotations

import time

from kvmsim.bench import PIO_ITERS, REPEAT, _scenario


def _attached_rate(iters: int) -> float:
    from kvmsim.debug.engine import Debugger

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
    """Best of REPEAT attached runs after a short warm-up (as bench._best_rate)."""
    _attached_rate(max(iters // 20, 10))
    return max(_attached_rate(iters) for _ in range(REPEAT))
