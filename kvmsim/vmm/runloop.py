"""The userspace VMM's vCPU loop (kvmtool kvm_cpu__start): KVM_RUN, then dispatch on exit_reason.

It knows only uapi.py: the same loop drives the simulation and the real /dev/kvm.
Every return to userspace is recorded as a `UserspaceExit` with kvm_run's field names.
"""

from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from kvmsim.uapi import KVM_EXIT_IO_IN, KvmExit, KvmGuestDebug, KvmInternalError, VcpuFd
from kvmsim.vmm.bus import Bus
from kvmsim.vmm.devices.python import DeviceError
from kvmsim.vmm.devices.simple import GuestExit
from kvmsim.vmm.exits import Stop, UserspaceExit
from kvmsim.vmm.limits import limit_detail

EINTR, EAGAIN = 4, 11
_SET_TPR = int(KvmExit.SET_TPR)
_EXIT_NAMES = {int(e): e.name for e in KvmExit}
(_IO, _MMIO, _X86_RDMSR, _X86_WRMSR, _HLT, _SHUTDOWN, _INTERNAL_ERROR, _FAIL_ENTRY, _EXCEPTION, _INTR) = (
    int(e) for e in (KvmExit.IO, KvmExit.MMIO, KvmExit.X86_RDMSR, KvmExit.X86_WRMSR, KvmExit.HLT, KvmExit.SHUTDOWN,
                     KvmExit.INTERNAL_ERROR, KvmExit.FAIL_ENTRY, KvmExit.EXCEPTION, KvmExit.INTR))
_IRQ_WINDOW_OPEN, _DEBUG = int(KvmExit.IRQ_WINDOW_OPEN), int(KvmExit.DEBUG)
BP_VECTOR, DB_VECTOR = 3, 1
EFLAGS_RF = 1 << 16
Policy = str  # "ignore" | "log" | "stop"  (kvmtool: ignore, --debug-ioport/--debug-mmio log)


@dataclass
class VmmConfig:
    unclaimed_io: Policy = "ignore"
    unclaimed_mmio: Policy = "ignore"
    msr_answers: dict[int, int] = field(default_factory=dict)   # KVM_EXIT_X86_RDMSR values
    max_exits: int = 100_000
    wall_seconds: float = 30.0
    # userspace-exit index → action on the vCPU before the next KVM_RUN (scenario events)
    events: dict[int, list[Callable[[VcpuFd], None]]] = field(default_factory=dict)
    # Asked when KVM_RUN returns -EINTR: the detail of a limit the backend enforces itself
    # (the sim's instruction budget), or None.
    limit_reached: Callable[[], str | None] | None = None
    # Exit log bound: the first and the last `keep_exits` records are kept, the ones between only
    # counted (Vmm.exits_omitted); None keeps every record.
    keep_exits: int | None = None
    # KVM_EXIT_HLT: "stop" ends the run (stop.reason hlt); "resume" issues KVM_RUN again (the
    # guest goes on after its HLT), bounded by max_exits / wall_seconds like any other exit.
    on_hlt: str = "stop"
    # Given every record in order, in batches while the run goes and the rest when it ends
    # (`run --exits-jsonl`, result.ExitStream); None: nothing is streamed and nothing is spent on it.
    exit_sink: Callable[[list[UserspaceExit]], None] | None = None
    # The userspace PIC (no in-kernel irqchip): userspace-exit index → vectors raised then; each is
    # injected with KVM_INTERRUPT when kvm_run allows it, meanwhile request_interrupt_window is set.
    irqs: dict[int, list[int]] = field(default_factory=dict)
    # userspace-exit index → KVM_SET_GUEST_DEBUG argument issued then
    guest_debug: dict[int, list[KvmGuestDebug]] = field(default_factory=dict)
    # The VM registered coalesced-MMIO zones: drain the ring after every KVM_RUN (False: nothing
    # can be in it, and the two reads of its cursors per exit are saved).
    coalesced_mmio: bool = True


STREAM_BATCH = 4096   # records held before they go to exit_sink when the log keeps them all


def _record(raw: tuple) -> UserspaceExit:
    """A raw IO/MMIO log entry as its record, kvm_run's field names in kvm_run's order."""
    if raw[0] == "IO":
        _, direction, size, port, count, data = raw
        return UserspaceExit("IO", {"direction": direction, "size": size, "port": port, "count": count,
                                    "data": data.hex()})
    _, gpa, length, is_write, data = raw
    return UserspaceExit("MMIO", {"phys_addr": gpa, "len": length, "is_write": is_write, "data": data.hex()})


def _reason(rec: UserspaceExit | tuple) -> str:
    return rec[0] if rec.__class__ is tuple else rec.reason  # type: ignore[index,union-attr]


class Vmm:
    """One vCPU's run loop over a PIO bus and an MMIO bus."""

    def __init__(self, vcpu: VcpuFd, pio: Bus, mmio: Bus, config: VmmConfig,
                 kick: Callable[[], None] | None = None) -> None:
        self.vcpu, self.pio, self.mmio, self.config = vcpu, pio, mmio, config
        self.kick = kick
        self.exits: list[UserspaceExit] = []   # raw tuples among them while run() runs (_materialize)
        self.exits_omitted = 0    # records dropped from the middle of `exits` (config.keep_exits)
        self._streamed = 0        # exits[:_streamed] already went to config.exit_sink
        self.coalesced: list[tuple[int, int, bool]] = []  # drained ring entries: (phys_addr, len, pio)
        self.log: list[str] = []
        self._stop: Stop | None = None
        # run->mmio and its data bytes, bound for the length of one _loop (views of the kvm_run
        # mapping: dropped when the loop returns, so that closing the vCPU can unmap it).
        self._run_mmio = None
        self._run_io = None
        self._run_mmio_data: memoryview | None = None
        self._mapping: memoryview | None = None   # the whole vCPU mmap (pio data page), bound likewise
        self.hlt_resumed = 0      # KVM_EXIT_HLTs re-entered (config.on_hlt == "resume")
        self.pic_pending: list[int] = []   # vectors the userspace PIC raised, not yet KVM_INTERRUPTed
        self._pre_run_done = -1            # the exit count whose PIC raises / guest-debug calls are issued

    def run(self) -> Stop:
        """KVM_RUN until the guest ends the run, KVM reports something fatal, or a limit is hit."""
        deadline = time.monotonic() + self.config.wall_seconds
        timer = threading.Timer(self.config.wall_seconds, self.kick) if self.kick else None
        if timer:
            timer.daemon = True
            timer.start()
        run = self.vcpu.mapping.run
        self._run_mmio = run.mmio
        self._run_io = run.io
        self._run_mmio_data = memoryview(self._run_mmio.data).cast("B")
        self._mapping = memoryview(self.vcpu.mapping.buf).cast("B")
        try:
            return self._loop(deadline)
        except DeviceError as e:       # a scenario's Python device failed: the VMM stops
            return Stop("device-error", detail=str(e))
        finally:
            self._trim_exits()
            self._materialize(0)
            self._run_mmio_data.release()
            self._mapping.release()
            self._run_mmio = self._run_io = self._run_mmio_data = self._mapping = None
            if timer:
                timer.cancel()

    def _loop(self, deadline: float) -> Stop:
        run = self.vcpu.mapping.run
        # coalesced MMIO, drained after every KVM_RUN
        ring = getattr(self.vcpu.mapping, "ring", None) if self.config.coalesced_mmio else None
        exits, events, max_exits, kvm_run = self.exits, self.config.events, self.config.max_exits, self.vcpu.run
        pre_run = bool(self.config.irqs or self.config.guest_debug)   # fixed for the run; only _pre_run fills pic_pending
        cap = self._log_cap()
        omitted = self.exits_omitted      # changes only in _trim_exits
        while True:
            n = len(exits)
            if n >= cap:
                n = self._trim_exits()
                cap = self._log_cap()
                omitted = self.exits_omitted
            n += omitted
            if events:
                for action in events.get(n, ()):
                    action(self.vcpu)
            if pre_run or self.pic_pending:
                self._pre_run(run, n)
            if n >= max_exits:
                return Stop("limit", detail=limit_detail("max_exits", max_exits) + self._hlt_note())
            if not n & 0xFF and time.monotonic() >= deadline:   # exits that come back at once, too
                return Stop("limit", detail=limit_detail("wall_seconds", self.config.wall_seconds) + self._hlt_note())
            r = kvm_run()
            if ring is not None and ring.first != ring.last:
                self._flush_coalesced_mmio(ring)
            if r < 0:
                if r in (-EINTR, -EAGAIN):
                    why = self.config.limit_reached() if self.config.limit_reached else None
                    if why is not None:
                        return Stop("limit", detail=why + self._hlt_note())
                    if time.monotonic() >= deadline:
                        return Stop("limit", detail=limit_detail("wall_seconds", self.config.wall_seconds)
                                    + self._hlt_note())
                    continue
                return Stop("error", code=-r, detail=f"KVM_RUN returned {r}")
            reason = run.exit_reason
            try:
                # Plain-int comparisons, most frequent first (a `match` on the IntEnum members costs an
                # enum attribute lookup per case); MMIO and IO go to their handlers without _dispatch.
                if reason == _MMIO:
                    stop = self._mmio(run)
                elif reason == _IO:
                    stop = self._io(run)
                else:
                    stop = self._dispatch(run, reason)
            except GuestExit as e:
                return Stop(e.reason, code=e.code, detail=e.detail)
            if stop is not None:
                return stop

    def _pre_run(self, run, n: int) -> None:
        """Before KVM_RUN, as QEMU's kvm_arch_pre_run: the debugger's KVM_SET_GUEST_DEBUG due now, the
        PIC's new lines; a pending vector goes in with KVM_INTERRUPT only when kvm_run says the vCPU
        takes it (ready_for_interrupt_injection and IF), else the VMM asks for the window."""
        if n != self._pre_run_done:
            self._pre_run_done = n
            for dbg in self.config.guest_debug.get(n, ()):
                self.vcpu.set_guest_debug(dbg)
            self.pic_pending.extend(self.config.irqs.get(n, ()))
        if self.pic_pending and run.ready_for_interrupt_injection and run.if_flag:
            self.vcpu.interrupt(self.pic_pending.pop(0))
        run.request_interrupt_window = 1 if self.pic_pending else 0

    def _hlt_note(self) -> str:
        """A limit hit by a guest that keeps halting under on_hlt: resume says so."""
        if not self.hlt_resumed:
            return ""
        last = _reason(self.exits[-1]) if self.exits else ""
        return (f"; the guest halted {self.hlt_resumed} times under vmm.on_hlt: resume"
                f"{' (last exit: KVM_EXIT_HLT)' if last == 'HLT' else ''}")

    @property
    def exit_count(self) -> int:
        """Userspace exits so far, kept or omitted."""
        return len(self.exits) + self.exits_omitted

    def _log_cap(self) -> int:
        """Log length at which _trim_exits runs next: once the middle holds `keep_exits` records,
        or, streaming a log that keeps everything, every STREAM_BATCH new records."""
        keep = self.config.keep_exits
        if keep is not None:
            return 3 * keep
        return len(self.exits) + (STREAM_BATCH if self.config.exit_sink is not None else 1 << 62)

    def _trim_exits(self) -> int:
        """Stream the records not yet streamed, then drop the ones between the first and the last
        `keep_exits`; amortised O(1) per exit."""
        keep, sink = self.config.keep_exits, self.config.exit_sink
        if sink is not None and self._streamed < len(self.exits):
            self._materialize(self._streamed)
            sink(self.exits[self._streamed:])
        if keep is not None and len(self.exits) > 2 * keep:
            cut = len(self.exits) - keep
            self.exits_omitted += cut - keep
            del self.exits[keep:cut]
        self._streamed = len(self.exits)
        return len(self.exits)

    def _materialize(self, start: int) -> None:
        """The IO and MMIO records from `start` on as UserspaceExits: the loop logs them as raw tuples
        (reason, kvm_run's values..., data bytes), built into records only for the log's readers (the
        sink, and everyone once run() returns), so the records _trim_exits drops are never built."""
        exits = self.exits
        for i in range(start, len(exits)):
            raw = exits[i]
            if raw.__class__ is tuple:
                exits[i] = _record(raw)

    def _flush_coalesced_mmio(self, ring) -> None:
        """kvmtool kvm_cpu__handle_coalesced_mmio: replay the ring's writes on the buses, in order."""
        n = len(ring.coalesced_mmio)
        while ring.first != ring.last:
            e = ring.coalesced_mmio[ring.first]
            self.coalesced.append((e.phys_addr, e.len, bool(e.pio)))
            found = (self.pio if e.pio else self.mmio).find(e.phys_addr)
            if found is not None:
                dev, off = found
                dev.io_write(off, bytes(e.data[: e.len]))
            ring.first = (ring.first + 1) % n

    def _dispatch(self, run, reason: int) -> Stop | None:
        """Every exit but MMIO and IO (_loop sends those to _mmio and _io, which record their own)."""
        rec = UserspaceExit(_EXIT_NAMES.get(reason) or f"UNKNOWN_{reason}")
        self.exits.append(rec)
        if reason == _X86_RDMSR or reason == _X86_WRMSR:
            return self._msr(run, rec, reason == _X86_RDMSR)
        if reason == _HLT:
            if self.config.on_hlt == "resume":
                self.hlt_resumed += 1
                return None
            return Stop("hlt")
        if reason == _SHUTDOWN:
            return Stop("shutdown")
        if reason == _INTERNAL_ERROR:
            return self._internal(run, rec)
        if reason == _FAIL_ENTRY:
            rec.fields = {"hardware_entry_failure_reason": run.fail_entry.hardware_entry_failure_reason,
                          "cpu": run.fail_entry.cpu}
            return Stop("fail-entry", code=run.fail_entry.hardware_entry_failure_reason)
        if reason == _EXCEPTION:
            rec.fields = {"exception": run.ex.exception, "error_code": run.ex.error_code}
            return Stop("exception", code=run.ex.exception)
        if reason == _INTR:
            self.exits.pop()
            return None
        if reason == _IRQ_WINDOW_OPEN:   # the PIC's vector goes in before the next KVM_RUN (_pre_run)
            rec.fields = {"if_flag": run.if_flag, "ready_for_interrupt_injection": run.ready_for_interrupt_injection}
            return None
        if reason == _DEBUG:
            return self._debug(run, rec)
        if reason == _SET_TPR:   # the guest lowered CR8; with no interrupt to deliver, run on (as QEMU)
            return None
        return Stop("unknown-exit", code=reason, detail=f"unhandled {rec.kname}")

    def _io(self, run) -> Stop | None:
        io = self._run_io                   # run->io (bound in run())
        if io is None:
            io = run.io
        direction, size, port, count, offset = io.direction, io.size, io.port, io.count, io.data_offset
        is_in = direction == KVM_EXIT_IO_IN
        n = size * count
        data = self._mapping[offset: offset + n]   # the bytes run->io.data_offset points at
        found = self.pio.find(port)
        if found is None:
            if is_in:
                data[:] = b"\xff" * n   # nothing decodes the port: the bus floats high
            self.exits.append(("IO", direction, size, port, count, bytes(data)))   # raw: see _materialize
            if self.config.unclaimed_io != "ignore":
                return self._unclaimed("io", self.config.unclaimed_io,
                                       f"{'in' if is_in else 'out'} port {port:#x} size {size}")
            return None
        dev, off = found
        try:
            for i in range(0, n, size):
                if is_in:
                    data[i:i + size] = dev.io_read(off, size)
                else:
                    dev.io_write(off, bytes(data[i:i + size]))
        finally:
            self.exits.append(("IO", direction, size, port, count, bytes(data)))
        return None

    def _mmio(self, run) -> Stop | None:
        m = self._run_mmio
        data = self._run_mmio_data          # run->mmio.data as bytes (bound in run())
        if m is None or data is None:
            m = run.mmio
            data = memoryview(m.data).cast("B")
        gpa, length, is_write = m.phys_addr, m.len, m.is_write
        found = self.mmio.find(gpa)
        try:
            if found is None:
                if not is_write:
                    ctypes.memmove(m.data, b"\xff" * length, length)   # nothing decodes it: reads float high
            else:
                dev, off = found
                if is_write:
                    dev.io_write(off, bytes(data[:length]))
                else:
                    got = dev.io_read(off, length)
                    if len(got) == length:
                        data[:length] = got
                    else:
                        ctypes.memmove(m.data, got, length)
        finally:
            self.exits.append(("MMIO", gpa, length, is_write, bytes(data[:length])))   # raw: see _materialize
        if found is None and self.config.unclaimed_mmio != "ignore":
            return self._unclaimed("mmio", self.config.unclaimed_mmio,
                                   f"{'write' if is_write else 'read'} at {gpa:#x} len {length}")
        return None

    def _msr(self, run, rec: UserspaceExit, is_read: bool) -> Stop | None:
        msr = run.msr
        rec.fields = {"reason": msr.reason, "index": msr.index}
        if is_read:
            if msr.index in self.config.msr_answers:
                msr.data, msr.error = self.config.msr_answers[msr.index], 0
            else:
                msr.error = 1   # userspace does not know it either: KVM injects #GP
        else:
            rec.fields["data"] = msr.data
            msr.error = 0 if msr.index in self.config.msr_answers else 1
        rec.fields["error"] = msr.error
        if is_read:
            rec.fields["data"] = msr.data
        return None

    def _debug(self, run, rec: UserspaceExit) -> None:
        """KVM_EXIT_DEBUG: record run->debug.arch and go on; at an INT3 (#BP, RIP on it) a debugger
        that planted it would restore the byte, so this one steps over it; at an instruction
        breakpoint (a fault: RIP on it) it sets RFLAGS.RF so that the instruction runs."""
        arch = run.debug.arch
        rec.fields = {"exception": arch.exception, "pc": arch.pc, "dr6": arch.dr6, "dr7": arch.dr7}
        if arch.exception == BP_VECTOR:
            regs = self.vcpu.get_regs()
            regs.rip += 1
            self.vcpu.set_regs(regs)
        elif arch.exception == DB_VECTOR and arch.dr6 & 0xF:   # an instruction breakpoint (B0-B3): RF
            regs = self.vcpu.get_regs()                        # lets the instruction run once
            regs.rflags |= EFLAGS_RF
            self.vcpu.set_regs(regs)
        return None

    def _internal(self, run, rec: UserspaceExit) -> Stop:
        it = run.internal
        rec.fields = {"suberror": it.suberror, "ndata": it.ndata, "data": [it.data[i] for i in range(min(it.ndata, 16))]}
        try:
            name = KvmInternalError(it.suberror).name
        except ValueError:
            name = str(it.suberror)
        return Stop("internal-error", suberror=it.suberror, detail=f"KVM_INTERNAL_ERROR_{name}")

    def _unclaimed(self, kind: str, policy: Policy, what: str) -> Stop | None:
        if policy == "log":
            self.log.append(f"unclaimed {kind}: {what}")
        elif policy == "stop":
            return Stop(f"{kind}-unclaimed", detail=f"unclaimed {what}")
        return None
