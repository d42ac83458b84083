"""The uapi surface (VmFd / VcpuFd / EventFd) backed by the real /dev/kvm, for differential checks.

Layout follows a minimal VMM (kvmtool kvm.c / kvm-cpu.c, KVM selftests kvm_util.c):
`RealKvm` is the /dev/kvm system fd, `RealVm` a VM fd, `RealVcpu` a vCPU fd plus its
KVM_GET_VCPU_MMAP_SIZE mapping wrapped in `KvmRunMapping`.  All ioctls go through libc via
ctypes (the GIL is released, EINTR is not retried), so a watchdog thread can kick a vCPU out
of KVM_RUN: it sets kvm_run.immediate_exit and sends SIGUSR2 to the thread in KVM_RUN.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import mmap
import os
import platform
import signal
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kvmsim.errors import BackendError
from kvmsim.realkvm import ioctls as K
from kvmsim.uapi import (KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO,
                         KvmCpuidEntry2, KvmGuestDebug, KvmIoeventfd, KvmMsrExitReason, KvmRegs, KvmRunMapping,
                         KvmSregs, KvmVcpuEvents)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int

VENDOR_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm")
KICK_SIGNAL = signal.SIGUSR2
DEFAULT_RUN_TIMEOUT_S = 5.0


def _ioctl(fd: int, request: int, arg: object = None) -> int:
    """ioctl(2); returns its value or raises BackendError naming the ioctl and errno."""
    r = _raw_ioctl(fd, request, arg)
    if r < 0:
        name = K.IOCTL_NAMES.get(request, hex(request))
        raise BackendError(f"{name} failed: {_errno.errorcode.get(-r, '?')} ({os.strerror(-r)})", errno=-r)
    return r


def _raw_ioctl(fd: int, request: int, arg: object = None) -> int:
    """ioctl(2) returning its value, or -errno."""
    if arg is None:
        p = None
    elif isinstance(arg, int):
        p = ctypes.c_void_p(arg)
    else:
        p = ctypes.cast(ctypes.byref(arg), ctypes.c_void_p)  # type: ignore[arg-type]
    r = _libc.ioctl(fd, request, p)
    return -ctypes.get_errno() if r == -1 else r


@dataclass(frozen=True)
class HostInfo:
    """What this /dev/kvm is: vendor module, API version, CPU vendor, kernel, capabilities."""

    module: str                  # kvm_intel / kvm_amd / kvm_pvm / "unknown"
    api_version: int
    cpu_vendor: str              # /proc/cpuinfo vendor_id, e.g. AuthenticAMD
    kernel: str                  # uname -r
    vcpu_mmap_size: int
    caps: dict[str, int] = field(default_factory=dict)  # KVM_CAP_* name → KVM_CHECK_EXTENSION value

    @property
    def is_vmx(self) -> bool:
        return self.module == "kvm_intel"


def vendor_module() -> str:
    """The loaded KVM vendor module (/sys/module), or 'unknown'."""
    return next((m for m in VENDOR_MODULES if Path("/sys/module", m).exists()), "unknown")


def cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


class _Fd:
    """An owned file descriptor with context-manager close."""

    fd: int

    def _close_fd(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._close_fd()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


class RealKvm(_Fd):
    """/dev/kvm: KVM_GET_API_VERSION, KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_GET_SUPPORTED_CPUID."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        self.fd = -1
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise BackendError(f"cannot open {path}: {e.strerror}") from e
        _install_kick_handler()

    def api_version(self) -> int:
        return _ioctl(self.fd, K.KVM_GET_API_VERSION)

    def check_extension(self, cap: int) -> int:
        return max(_raw_ioctl(self.fd, K.KVM_CHECK_EXTENSION, cap), 0)

    def vcpu_mmap_size(self) -> int:
        return _ioctl(self.fd, K.KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self, max_entries: int = 256) -> list[KvmCpuidEntry2]:
        cpuid = K.kvm_cpuid2(max_entries)()
        cpuid.nent = max_entries
        _ioctl(self.fd, K.KVM_GET_SUPPORTED_CPUID, cpuid)
        return [KvmCpuidEntry2.from_buffer_copy(cpuid.entries[i]) for i in range(cpuid.nent)]

    def host_info(self) -> HostInfo:
        caps = {name: self.check_extension(n) for n, name in sorted(K.CAP_NAMES.items())}
        return HostInfo(module=vendor_module(), api_version=self.api_version(), cpu_vendor=cpu_vendor(),
                        kernel=platform.release(), vcpu_mmap_size=self.vcpu_mmap_size(), caps=caps)

    def create_vm(self, vm_type: int = 0, *, owns_kvm: bool = False) -> "RealVm":
        """KVM_CREATE_VM; with owns_kvm the VM's close() also closes this /dev/kvm fd."""
        vm = RealVm(self, _ioctl(self.fd, K.KVM_CREATE_VM, vm_type))
        vm.owns_kvm = owns_kvm
        return vm


class RealEventFd(_Fd):
    """An eventfd (EFD_NONBLOCK) registered as an ioeventfd; read_count() drains it."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def read_count(self) -> int:
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0


class RealVm(_Fd):
    """A VM fd implementing uapi.VmFd."""

    def __init__(self, kvm: RealKvm, fd: int) -> None:
        self.kvm, self.fd = kvm, fd
        self._pins: dict[int, ctypes.Array] = {}     # slot → pin on the VMM's memory
        self._ioeventfds: list[tuple[KvmIoeventfd, RealEventFd]] = []
        self._vcpus: list[RealVcpu] = []
        self.owns_kvm = False

    # -- memory
    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory: memoryview,
                               flags: int = 0) -> None:
        """KVM_SET_USER_MEMORY_REGION over a writable buffer (e.g. a memoryview of an mmap.mmap).

        An empty buffer deletes the slot.  The buffer stays pinned (exported) until the slot is
        replaced or the VM is closed, so the VMM cannot unmap memory the guest still uses.
        """
        mv = memoryview(memory)
        size = mv.nbytes
        pin = (ctypes.c_char * size).from_buffer(mv) if size else None
        region = K.KvmUserspaceMemoryRegion(slot=slot, flags=flags, guest_phys_addr=guest_phys_addr,
                                            memory_size=size,
                                            userspace_addr=ctypes.addressof(pin) if pin is not None else 0)
        _ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION, region)
        self._pins.pop(slot, None)
        if pin is not None:
            self._pins[slot] = pin

    def enable_manual_dirty_log_protect(self, flags: int) -> None:
        self.enable_cap(K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, flags)

    def clear_dirty_log(self, slot: int, first_page: int, num_pages: int, mask: bytes) -> None:
        """KVM_CLEAR_DIRTY_LOG over `mask` (one bit a page from first_page)."""
        buf = ctypes.create_string_buffer(bytes(mask), max(len(mask), 8))
        _ioctl(self.fd, K.KVM_CLEAR_DIRTY_LOG, K.KvmClearDirtyLog(slot=slot, num_pages=num_pages, first_page=first_page,
                                                                  dirty_bitmap=ctypes.addressof(buf)))

    def get_dirty_log(self, slot: int) -> bytes:
        """KVM_GET_DIRTY_LOG into a bitmap sized for the slot (one bit a page, whole 64-bit words)."""
        pin = self._pins.get(slot)
        npages = (ctypes.sizeof(pin) >> 12) if pin is not None else 0
        buf = ctypes.create_string_buffer((npages + 63) // 64 * 8 or 8)
        _ioctl(self.fd, K.KVM_GET_DIRTY_LOG, K.KvmDirtyLog(slot=slot, dirty_bitmap=ctypes.addressof(buf)))
        return buf.raw

    def set_tss_addr(self, addr: int) -> None:
        _ioctl(self.fd, K.KVM_SET_TSS_ADDR, addr)

    def set_identity_map_addr(self, addr: int) -> None:
        _ioctl(self.fd, K.KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(addr))

    # -- in-kernel I/O bus
    def ioeventfd(self, addr: int, length: int, *, pio: bool = False,
                  datamatch: int | None = None) -> RealEventFd:
        """KVM_IOEVENTFD: guest writes to addr (len 0 = any length, MMIO only) signal an eventfd."""
        efd = RealEventFd()
        arg = KvmIoeventfd(addr=addr, len=length, fd=efd.fd,
                           flags=(KVM_IOEVENTFD_FLAG_PIO if pio else 0)
                           | (KVM_IOEVENTFD_FLAG_DATAMATCH if datamatch is not None else 0),
                           datamatch=datamatch or 0)
        try:
            _ioctl(self.fd, K.KVM_IOEVENTFD, arg)
        except BackendError:
            efd.close()
            raise
        self._ioeventfds.append((arg, efd))
        return efd

    def register_coalesced_mmio(self, addr: int, size: int, *, pio: bool = False) -> None:
        _ioctl(self.fd, K.KVM_REGISTER_COALESCED_MMIO, K.KvmCoalescedMmioZone(addr=addr, size=size, pio=int(pio)))

    # -- capabilities
    def check_extension(self, cap: int) -> int:
        return max(_raw_ioctl(self.fd, K.KVM_CHECK_EXTENSION, cap), 0)

    def enable_cap(self, cap: int, *args: int) -> None:
        ec = K.KvmEnableCap(cap=cap)
        for i, a in enumerate(args):
            ec.args[i] = a
        _ioctl(self.fd, K.KVM_ENABLE_CAP, ec)

    def enable_user_space_msr(self, mask: KvmMsrExitReason) -> None:
        self.enable_cap(K.KVM_CAP_X86_USER_SPACE_MSR, int(mask))

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP: the kernel's PIC, IO-APIC and (per vCPU created later) local APIC."""
        _ioctl(self.fd, K.KVM_CREATE_IRQCHIP, 0)

    def create_pit2(self, flags: int = 0) -> None:
        """KVM_CREATE_PIT2: the kernel's 8254."""
        _ioctl(self.fd, K.KVM_CREATE_PIT2, K.KvmPitConfig(flags=flags))

    def irq_line(self, irq: int, level: int) -> int:
        """KVM_IRQ_LINE_STATUS: the kernel's status for the GSI (< 0 not delivered, 0 coalesced)."""
        lv = K.KvmIrqLevel(irq=irq, level=level)
        _ioctl(self.fd, K.KVM_IRQ_LINE_STATUS, lv)
        return ctypes.c_int32(lv.irq).value

    def get_irqchip(self, chip_id: int) -> "K.KvmPicState":
        chip = K.KvmIrqchip(chip_id=chip_id)
        _ioctl(self.fd, K.KVM_GET_IRQCHIP, chip)
        return K.KvmPicState.from_buffer_copy(chip.chip.pic)

    def set_irqchip(self, chip_id: int, state: "K.KvmPicState") -> None:
        chip = K.KvmIrqchip(chip_id=chip_id)
        chip.chip.pic = state
        _ioctl(self.fd, K.KVM_SET_IRQCHIP, chip)

    def get_pit2(self) -> "K.KvmPitState2":
        st = K.KvmPitState2()
        _ioctl(self.fd, K.KVM_GET_PIT2, st)
        return st

    def set_pit2(self, state: "K.KvmPitState2") -> None:
        _ioctl(self.fd, K.KVM_SET_PIT2, state)

    # -- vCPUs
    def create_vcpu(self, vcpu_id: int = 0, *, cpuid: bool = True) -> "RealVcpu":
        """KVM_CREATE_VCPU, mmap its kvm_run, and (cpuid=True) KVM_SET_CPUID2 the supported CPUID.

        Without a CPUID table KVM refuses EFER.LME in KVM_SET_SREGS, so like KVM selftests'
        vm_vcpu_add we install KVM_GET_SUPPORTED_CPUID by default.
        """
        vcpu = RealVcpu(self, _ioctl(self.fd, K.KVM_CREATE_VCPU, vcpu_id), vcpu_id)
        self._vcpus.append(vcpu)
        if cpuid:
            vcpu.set_cpuid(self.kvm.supported_cpuid())
        return vcpu

    def close(self) -> None:
        for vcpu in getattr(self, "_vcpus", []):
            vcpu.close()
        self._vcpus = []
        for _arg, efd in getattr(self, "_ioeventfds", []):
            efd.close()
        self._ioeventfds = []
        self._close_fd()
        self._pins = {}  # after the VM fd is gone: KVM no longer maps the memory
        if getattr(self, "owns_kvm", False):
            self.kvm.close()


class RealVcpu(_Fd):
    """A vCPU fd implementing uapi.VcpuFd; `mapping` views the kernel's kvm_run pages."""

    def __init__(self, vm: RealVm, fd: int, vcpu_id: int) -> None:
        self.vm, self.fd, self.vcpu_id = vm, fd, vcpu_id
        self.run_timeout: float | None = DEFAULT_RUN_TIMEOUT_S  # wall-time bound per KVM_RUN
        self.timed_out = False   # the last run() was cut short by the watchdog
        self._run_tid: int | None = None  # thread in KVM_RUN (kick() signals it)
        self._run_gen = 0                 # KVM_RUNs so far (which run the watchdog fired for)
        self._seen: tuple[int, float] | None = None   # the watchdog's: (run generation, when it first saw it)
        self._stale_fire = -1             # the run generation the watchdog kicked, until run() sees it
        self._kicked = False              # kick() set immediate_exit: it stays set
        self._watched = False
        size = vm.kvm.vcpu_mmap_size()
        self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.mapping = KvmRunMapping(self._mmap)

    # -- KVM_RUN
    def run(self) -> int:
        """KVM_RUN: 0 with an exit in kvm_run, or -EINTR/-EAGAIN; other errors raise BackendError.

        Bounded by `run_timeout` seconds: the watchdog sets immediate_exit and signals this
        thread, KVM_RUN then returns -EINTR with exit_reason KVM_EXIT_INTR and `timed_out` set.
        As lean as a plain ctypes loop: arming is two attribute stores the watchdog polls (a new
        run generation and the thread; no clock read, no lock, no wake-up of its thread), and the
        ioctl is one direct libc call.
        """
        self.timed_out = False
        if self._stale_fire >= 0:
            self._clear_stale_fire()
        if self.run_timeout:
            self._run_gen = gen = self._run_gen + 1
            self._run_tid = _get_ident()            # armed: the watchdog times the generation it sees
            if not self._watched:
                _WATCHDOG.watch(self)               # first run: the watchdog starts looking
            r = _kvm_run_ioctl(self.fd, _KVM_RUN, 0)
            self._run_tid = None
            if self._stale_fire >= 0:
                with _WATCHDOG.lock:       # the watchdog fires only under its lock
                    if self._stale_fire == gen:
                        self.timed_out = True
                        self._stale_fire = -1
                        if not self._kicked:
                            self.mapping.run.immediate_exit = 0
        else:
            self._run_tid = _get_ident()
            r = _kvm_run_ioctl(self.fd, _KVM_RUN, 0)
            self._run_tid = None
        if r >= 0:
            return 0
        e = ctypes.get_errno()
        if e == _errno.EINTR or e == _errno.EAGAIN:
            return -e
        raise BackendError(f"KVM_RUN failed: {_errno.errorcode.get(e, '?')} ({os.strerror(e)})")

    def _clear_stale_fire(self) -> None:
        """The watchdog fired for a KVM_RUN that had already returned: undo its immediate_exit
        (unless kick() asked for it) so the next KVM_RUN is not cut short for nothing."""
        with _WATCHDOG.lock:
            if self._stale_fire >= 0:
                self._stale_fire = -1
                if not self._kicked and self.mapping is not None:
                    self.mapping.run.immediate_exit = 0

    def kick(self) -> None:
        """From another thread: make KVM_RUN return -EINTR now and every later KVM_RUN at once.

        As a VMM's vCPU kick: kvm_run.immediate_exit = 1, then a signal to the thread in KVM_RUN.
        The flag stays set, so a run() that starts after the kick also returns -EINTR.
        """
        self._kicked = True
        if self.mapping is not None:
            self.mapping.run.immediate_exit = 1
        tid = self._run_tid
        if tid is not None and signal.getsignal(KICK_SIGNAL) is _kick_handler:
            try:
                signal.pthread_kill(tid, KICK_SIGNAL)
            except (ProcessLookupError, OSError):
                pass  # the thread left KVM_RUN (and maybe ended) meanwhile

    # -- registers
    def get_regs(self) -> KvmRegs:
        regs = KvmRegs()
        _ioctl(self.fd, K.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        _ioctl(self.fd, K.KVM_SET_REGS, regs)

    def get_sregs(self) -> KvmSregs:
        sregs = KvmSregs()
        _ioctl(self.fd, K.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: KvmSregs) -> None:
        _ioctl(self.fd, K.KVM_SET_SREGS, sregs)

    def get_cpuid(self, max_entries: int = 256) -> list[KvmCpuidEntry2]:
        """KVM_GET_CPUID2 (E2BIG if the vCPU has more than max_entries)."""
        cpuid = K.kvm_cpuid2(max_entries)()
        cpuid.nent = max_entries
        _ioctl(self.fd, K.KVM_GET_CPUID2, cpuid)
        return [KvmCpuidEntry2.from_buffer_copy(cpuid.entries[i]) for i in range(cpuid.nent)]

    def set_cpuid(self, entries: Sequence[KvmCpuidEntry2]) -> None:
        cpuid = K.kvm_cpuid2(len(entries))()
        cpuid.nent = len(entries)
        for i, e in enumerate(entries):
            cpuid.entries[i] = e
        _ioctl(self.fd, K.KVM_SET_CPUID2, cpuid)

    def get_msrs(self, indices: Sequence[int]) -> dict[int, int]:
        """KVM_GET_MSRS: the MSRs KVM returned (it stops at the first one it cannot read)."""
        msrs = K.kvm_msrs(len(indices))()
        msrs.nmsrs = len(indices)
        for i, idx in enumerate(indices):
            msrs.entries[i].index = idx
        n = _ioctl(self.fd, K.KVM_GET_MSRS, msrs)
        return {msrs.entries[i].index: msrs.entries[i].data for i in range(n)}

    def set_msrs(self, values: dict[int, int]) -> int:
        """KVM_SET_MSRS: how many were set (KVM stops at the first it rejects)."""
        msrs = K.kvm_msrs(len(values))()
        msrs.nmsrs = len(values)
        for i, (idx, data) in enumerate(values.items()):
            msrs.entries[i].index, msrs.entries[i].data = idx, data
        return _ioctl(self.fd, K.KVM_SET_MSRS, msrs)

    # -- events
    def nmi(self) -> None:
        _ioctl(self.fd, K.KVM_NMI)

    def interrupt(self, irq: int) -> None:
        _ioctl(self.fd, K.KVM_INTERRUPT, K.KvmInterrupt(irq=irq))

    def set_guest_debug(self, dbg: KvmGuestDebug) -> None:
        _ioctl(self.fd, K.KVM_SET_GUEST_DEBUG, dbg)

    def get_vcpu_events(self) -> KvmVcpuEvents:
        events = KvmVcpuEvents()
        _ioctl(self.fd, K.KVM_GET_VCPU_EVENTS, events)
        return events

    def set_vcpu_events(self, events: KvmVcpuEvents) -> None:
        _ioctl(self.fd, K.KVM_SET_VCPU_EVENTS, events)

    def enable_cap(self, cap: int, *args: int) -> None:
        ec = K.KvmEnableCap(cap=cap)
        for i, a in enumerate(args):
            ec.args[i] = a
        _ioctl(self.fd, K.KVM_ENABLE_CAP, ec)

    def close(self) -> None:
        if getattr(self, "_watched", False):
            _WATCHDOG.unwatch(self)
        if getattr(self, "_mmap", None) is not None:
            m, self._mmap = self._mmap, None
            self.mapping = None  # type: ignore[assignment]  # drop the ctypes views (buffer exports)
            try:
                m.close()
            except BufferError:
                pass  # a caller still holds a view of kvm_run; the mapping goes when that does
        self._close_fd()


# ---------------------------------------------------------------- the KVM_RUN watchdog

def _kick_handler(signum: int, frame: object) -> None:
    """SIGUSR2: only there so the signal interrupts KVM_RUN (-EINTR) instead of killing us."""


def _install_kick_handler() -> None:
    if threading.current_thread() is threading.main_thread() and signal.getsignal(KICK_SIGNAL) in (
            signal.SIG_DFL, None):
        signal.signal(KICK_SIGNAL, _kick_handler)


class _Watchdog:
    """One daemon thread that kicks vCPUs whose KVM_RUN outlives its run_timeout.

    It polls instead of being told: a vCPU arms a run by storing a new run generation and its
    thread (RealVcpu.run), and the thread looks every quarter of the shortest run_timeout.  A
    generation still in KVM_RUN `run_timeout` after the look that first saw it is kicked: never
    sooner than run_timeout after the run began, at most about half a run_timeout later.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._cv = threading.Condition(self.lock)
        self._vcpus: "weakref.WeakSet[RealVcpu]" = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def watch(self, vcpu: RealVcpu) -> None:
        with self._cv:
            vcpu._watched = True
            self._vcpus.add(vcpu)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="kvm-run-watchdog", daemon=True)
                self._thread.start()
            self._cv.notify()

    def unwatch(self, vcpu: RealVcpu) -> None:
        with self._cv:
            vcpu._watched = False
            self._vcpus.discard(vcpu)

    def _loop(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                period = 3600.0
                for vcpu in list(self._vcpus):
                    timeout, gen, tid = vcpu.run_timeout, vcpu._run_gen, vcpu._run_tid
                    if timeout:
                        period = min(period, timeout / 4)   # runs start unannounced: keep looking
                    if not timeout or tid is None:
                        vcpu._seen = None
                        continue
                    seen = vcpu._seen
                    if seen is None or seen[0] != gen:
                        vcpu._seen = (gen, now)         # first seen in this KVM_RUN
                    elif now - seen[1] >= timeout:
                        vcpu._stale_fire = gen
                        if vcpu.mapping is not None:
                            vcpu.mapping.run.immediate_exit = 1
                        if signal.getsignal(KICK_SIGNAL) is _kick_handler:
                            try:
                                signal.pthread_kill(tid, KICK_SIGNAL)
                            except (ProcessLookupError, OSError):
                                pass
                        period = min(period, 0.05)      # keep kicking until it returns
                self._cv.wait(timeout=max(period, 0.001))


_WATCHDOG = _Watchdog()
_KVM_RUN = K.KVM_RUN
# KVM_RUN's own ioctl symbol, without argtypes: three plain C ints (fd, request, 0) go straight
# through, where the converting prototype above costs about 0.3 us a call (as much as the rest of run()).
_kvm_run_ioctl = ctypes.CDLL(None, use_errno=True).ioctl
_kvm_run_ioctl.restype = ctypes.c_int
_get_ident = threading.get_ident
