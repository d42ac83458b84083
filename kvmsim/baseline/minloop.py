"""The minimal Python VMM loop on /dev/kvm: one ctypes ioctl per KVM_RUN, fields read in place.

Not a kernel model: the yardstick for kvmsim's own real backend (realkvm/ + vmm/runloop.py).
It runs a kvm-backend machine kvmsim set up, and does only what the bench loops need.
"""

from __future__ import annotations

import ctypes
import errno
import time

from kvmsim.realkvm import ioctls as K
from kvmsim.scenario.runner import Machine
from kvmsim.uapi import KvmExit, KvmRun

_libc = ctypes.CDLL(None, use_errno=True)
_EXIT_IO, _EXIT_MMIO = int(KvmExit.IO), int(KvmExit.MMIO)
_MMIO_ANSWER = (0x1234).to_bytes(8, "little")


def run_minloop(m: Machine, iters: int, exit_port: int = 0xF4) -> tuple[float, int]:
    """(round trips/s, round trips) of `m`'s loop run `iters` times (RCX) by the minimal loop."""
    regs = m.vcpu.get_regs()
    regs.rcx = iters
    m.vcpu.set_regs(regs)
    run = KvmRun.from_buffer(m.vcpu.mapping.buf)
    ioctl, fd, KVM_RUN = _libc.ioctl, m.vcpu.fd, K.KVM_RUN
    io, mmio = run.io, run.mmio            # views into the mapping, made once
    n = 0
    t0 = time.perf_counter()
    while True:
        if ioctl(fd, KVM_RUN, 0) < 0:
            e = ctypes.get_errno()
            if e in (errno.EINTR, errno.EAGAIN):
                continue
            raise OSError(e, f"KVM_RUN: {errno.errorcode.get(e, e)}")
        reason = run.exit_reason
        if reason == _EXIT_IO:
            if io.port == exit_port:
                break
        elif reason == _EXIT_MMIO:
            if not mmio.is_write:
                ctypes.memmove(mmio.data, _MMIO_ANSWER, mmio.len)
        else:
            raise RuntimeError(f"unexpected exit reason {reason} after {n} round trips")
        n += 1
    dt = time.perf_counter() - t0
    return n / dt, n
