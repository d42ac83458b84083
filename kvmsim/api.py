"""The Python API for VMM authors: the kernel's ioctl surface in the shape of rust-vmm's kvm-ioctls.

`Kvm(backend="sim")` is the simulated KVM (kvm/kvm_main.py), `Kvm(backend="kvm")` the real
/dev/kvm (realkvm/backend.py); both already speak the VmFd / VcpuFd protocols of uapi.py, so
this module only adds what a VMM author expects on top: one entry point for either backend,
`run()` that returns a typed exit (rust-vmm's `VcpuExit`) instead of an errno and a raw
`struct kvm_run`, and context managers that release the VM.  It holds no KVM logic itself.

    with Kvm("sim") as kvm, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, 0x0, ram)     # ram: a writable, page-aligned buffer (mmap)
        vcpu = vm.create_vcpu(0)                   # architectural reset state: CS base 0xffff0000, RIP 0xfff0
        match vcpu.run():
            case Io(port=0x3f8, direction=IoDirection.OUT, data=data): ...
            case Hlt(): ...

Not here (neither backend models it for a VMM): the in-kernel PIC and IO-APIC lines
(KVM_IRQ_LINE; `create_irqchip` gives the sim a local APIC only), dirty logging, more than one
vCPU running at a time.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from kvmsim.errors import BackendError
from kvmsim.realkvm.probe import KVM_API_VERSION
from kvmsim.uapi import (KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_MEM_READONLY,
                         PAGE_SIZE, EventFd, KvmCpuidEntry2, KvmExit, KvmInternalError, KvmMsrExitReason,
                         KvmGuestDebug, KvmRegs, KvmRun, KvmRunMapping, KvmSregs, KvmVcpuEvents, VcpuFd, VmFd,
                         _Mmio)

if TYPE_CHECKING:
    from kvmsim.kvm.vcpu import KvmParams

BACKENDS = ("sim", "kvm")


# ---------------------------------------------------------------- typed exits (rust-vmm VcpuExit)

class IoDirection(IntEnum):
    """run->io.direction."""

    IN = KVM_EXIT_IO_IN
    OUT = KVM_EXIT_IO_OUT


@dataclass(frozen=True)
class VcpuExit:
    """What one KVM_RUN returned to userspace: `reason` is run->exit_reason."""

    reason: ClassVar[KvmExit] = KvmExit.UNKNOWN


@dataclass(frozen=True)
class Io(VcpuExit):
    """KVM_EXIT_IO: `data` is the size*count bytes at run->io.data_offset in the vCPU mapping.

    For OUT it holds what the guest wrote; for IN write the answer into it before the next
    run() (KVM copies it into the guest's registers or memory then).  Like rust-vmm's slice,
    the view is valid until the next run(): it is released then.
    """

    reason: ClassVar[KvmExit] = KvmExit.IO
    port: int
    size: int
    direction: IoDirection
    count: int
    data: memoryview


@dataclass(frozen=True)
class Mmio(VcpuExit):
    """KVM_EXIT_MMIO: `data` views run->mmio.data[:len]; for a read, fill it before the next run()."""

    reason: ClassVar[KvmExit] = KvmExit.MMIO
    gpa: int
    len: int
    is_write: bool
    data: memoryview


@dataclass(frozen=True)
class Hlt(VcpuExit):
    """KVM_EXIT_HLT: the guest halted and there is no in-kernel irqchip to wait for an interrupt."""

    reason: ClassVar[KvmExit] = KvmExit.HLT


@dataclass(frozen=True)
class Shutdown(VcpuExit):
    """KVM_EXIT_SHUTDOWN: a triple fault (the guest cannot continue; reset or destroy the VM)."""

    reason: ClassVar[KvmExit] = KvmExit.SHUTDOWN


@dataclass(frozen=True)
class InternalError(VcpuExit):
    """KVM_EXIT_INTERNAL_ERROR: KVM could not go on (e.g. the emulator failed on an instruction).

    `data` is run->internal.data[:ndata]; for KVM_INTERNAL_ERROR_EMULATION with instruction bytes
    (KVM_CAP_EXIT_ON_EMULATION_FAILURE) `insn_bytes` holds them.
    """

    reason: ClassVar[KvmExit] = KvmExit.INTERNAL_ERROR
    suberror: int
    data: tuple[int, ...]
    insn_bytes: bytes | None = None

    @property
    def suberror_name(self) -> str:
        try:
            return f"KVM_INTERNAL_ERROR_{KvmInternalError(self.suberror).name}"
        except ValueError:
            return str(self.suberror)


@dataclass(frozen=True)
class FailEntry(VcpuExit):
    """KVM_EXIT_FAIL_ENTRY: VM entry failed (invalid guest state the hardware refused)."""

    reason: ClassVar[KvmExit] = KvmExit.FAIL_ENTRY
    hardware_entry_failure_reason: int
    cpu: int


@dataclass(frozen=True)
class Exception_(VcpuExit):
    """KVM_EXIT_EXCEPTION: an exception KVM hands to userspace (e.g. #UD, #DB in real mode)."""

    reason: ClassVar[KvmExit] = KvmExit.EXCEPTION
    exception: int
    error_code: int


@dataclass(frozen=True)
class X86Rdmsr(VcpuExit):
    """KVM_EXIT_X86_RDMSR (KVM_CAP_X86_USER_SPACE_MSR): answer in vcpu.kvm_run.msr.data, or set .error = 1 for #GP."""

    reason: ClassVar[KvmExit] = KvmExit.X86_RDMSR
    index: int
    msr_reason: KvmMsrExitReason


@dataclass(frozen=True)
class X86Wrmsr(VcpuExit):
    """KVM_EXIT_X86_WRMSR: the guest wrote `data`; set vcpu.kvm_run.msr.error = 1 to make it #GP."""

    reason: ClassVar[KvmExit] = KvmExit.X86_WRMSR
    index: int
    msr_reason: KvmMsrExitReason
    data: int


@dataclass(frozen=True)
class Intr(VcpuExit):
    """KVM_EXIT_INTR: KVM_RUN returned -EINTR (a signal, kvm_run.immediate_exit, or the real backend's watchdog)."""

    reason: ClassVar[KvmExit] = KvmExit.INTR


@dataclass(frozen=True)
class IrqWindowOpen(VcpuExit):
    """KVM_EXIT_IRQ_WINDOW_OPEN: you set kvm_run.request_interrupt_window and the guest can now take
    an interrupt: call interrupt(vector) (a userspace PIC) and clear the request."""

    reason: ClassVar[KvmExit] = KvmExit.IRQ_WINDOW_OPEN


@dataclass(frozen=True)
class Debug(VcpuExit):
    """KVM_EXIT_DEBUG (set_guest_debug): run->debug.arch; `pc` is a linear address."""

    reason: ClassVar[KvmExit] = KvmExit.DEBUG
    exception: int
    pc: int
    dr6: int
    dr7: int


@dataclass(frozen=True)
class Other(VcpuExit):
    """Any other exit reason: read the rest from vcpu.kvm_run."""

    exit_reason: int

    @property
    def name(self) -> str:
        try:
            return KvmExit(self.exit_reason).kname
        except ValueError:
            return f"KVM_EXIT_{self.exit_reason}"


_MMIO_DATA_OFFSET = KvmRun.u.offset + _Mmio.data.offset   # run->mmio.data within the mapping


# ---------------------------------------------------------------- kvm, vm, vcpu

class Vcpu:
    """A vCPU fd: KVM_RUN with typed exits, the register ioctls, raw kvm_run access."""

    def __init__(self, fd: VcpuFd, vm: "Vm") -> None:
        self.fd = fd                      # the backend's VcpuFd (uapi.py), for anything not wrapped here
        self.vm = vm
        self._views: list[memoryview] = []

    @property
    def mapping(self) -> KvmRunMapping:
        """The vCPU mmap: kvm_run (page 0), PIO data (page 1), coalesced-MMIO ring (page 2)."""
        return self.fd.mapping

    @property
    def kvm_run(self) -> KvmRun:
        """struct kvm_run, shared with KVM (fields as in include/uapi/linux/kvm.h)."""
        return self.fd.mapping.run

    def run(self) -> VcpuExit:
        """KVM_RUN, then decode kvm_run.exit_reason; an ioctl error other than EINTR raises OSError."""
        self._release_views()
        r = self.fd.run()
        if r == -_errno.EINTR:
            return Intr()
        if r < 0:
            raise OSError(-r, f"KVM_RUN: {os.strerror(-r)}")
        return self._decode(self.fd.mapping)

    def _decode(self, m: KvmRunMapping) -> VcpuExit:
        run = m.run
        reason = run.exit_reason
        if reason == KvmExit.IO:
            io = run.io
            data = self._view(m, io.data_offset, io.size * io.count)
            return Io(io.port, io.size, IoDirection(io.direction), io.count, data)
        if reason == KvmExit.MMIO:
            mm = run.mmio
            return Mmio(mm.phys_addr, mm.len, bool(mm.is_write), self._view(m, _MMIO_DATA_OFFSET, mm.len))
        if reason == KvmExit.HLT:
            return Hlt()
        if reason == KvmExit.SHUTDOWN:
            return Shutdown()
        if reason == KvmExit.INTERNAL_ERROR:
            it = run.internal
            insn = None
            ef = run.emulation_failure
            if it.suberror == KvmInternalError.EMULATION and it.ndata >= 2 and ef.flags & 1:
                insn = bytes(ef.insn_bytes[:min(ef.insn_size, 15)])
            return InternalError(it.suberror, tuple(it.data[i] for i in range(min(it.ndata, 16))), insn)
        if reason == KvmExit.FAIL_ENTRY:
            return FailEntry(run.fail_entry.hardware_entry_failure_reason, run.fail_entry.cpu)
        if reason == KvmExit.EXCEPTION:
            return Exception_(run.ex.exception, run.ex.error_code)
        if reason == KvmExit.X86_RDMSR:
            return X86Rdmsr(run.msr.index, KvmMsrExitReason(run.msr.reason))
        if reason == KvmExit.X86_WRMSR:
            return X86Wrmsr(run.msr.index, KvmMsrExitReason(run.msr.reason), run.msr.data)
        if reason == KvmExit.INTR:
            return Intr()
        if reason == KvmExit.IRQ_WINDOW_OPEN:
            return IrqWindowOpen()
        if reason == KvmExit.DEBUG:
            a = run.debug.arch
            return Debug(a.exception, a.pc, a.dr6, a.dr7)
        return Other(reason)

    def _view(self, m: KvmRunMapping, offset: int, length: int) -> memoryview:
        whole = memoryview(m.buf).cast("B")
        view = whole[offset:offset + length]
        whole.release()
        self._views.append(view)
        return view

    def _release_views(self) -> None:
        """End the previous exit's data views, so that closing the VM can unmap kvm_run."""
        for v in self._views:
            v.release()
        self._views.clear()

    def get_regs(self) -> KvmRegs:
        return self.fd.get_regs()

    def set_regs(self, regs: KvmRegs) -> None:
        self.fd.set_regs(regs)

    def get_sregs(self) -> KvmSregs:
        return self.fd.get_sregs()

    def set_sregs(self, sregs: KvmSregs) -> None:
        self.fd.set_sregs(sregs)

    def get_cpuid(self) -> list[KvmCpuidEntry2]:
        """KVM_GET_CPUID2: the table the vCPU uses (each backend installs one at create_vcpu)."""
        return self.fd.get_cpuid()

    def set_cpuid(self, entries: Sequence[KvmCpuidEntry2]) -> None:
        """KVM_SET_CPUID2: replaces the whole table (start from get_cpuid() to override leaves)."""
        self.fd.set_cpuid(entries)

    def nmi(self) -> None:
        self.fd.nmi()

    def interrupt(self, irq: int) -> None:
        """KVM_INTERRUPT: inject an external interrupt (userspace PIC; no in-kernel irqchip)."""
        self.fd.interrupt(irq)

    @property
    def request_interrupt_window(self) -> bool:
        """kvm_run.request_interrupt_window: ask for IrqWindowOpen once the guest can take an interrupt."""
        return bool(self.fd.mapping.run.request_interrupt_window)

    @request_interrupt_window.setter
    def request_interrupt_window(self, on: bool) -> None:
        self.fd.mapping.run.request_interrupt_window = int(on)

    @property
    def ready_for_interrupt_injection(self) -> bool:
        """kvm_run.ready_for_interrupt_injection after the last run(): interrupt() is safe now."""
        return bool(self.fd.mapping.run.ready_for_interrupt_injection)

    def set_guest_debug(self, control: int, debugreg: Sequence[int] = ()) -> None:
        """KVM_SET_GUEST_DEBUG: control is KVM_GUESTDBG_* bits (ENABLE | SINGLESTEP | USE_SW_BP |
        USE_HW_BP); debugreg[0..3] and [7] are the debugger's DR0-3 and DR7 (USE_HW_BP)."""
        dbg = KvmGuestDebug(control=control)
        for i, v in enumerate(debugreg[:8]):
            dbg.arch.debugreg[i] = v
        self.fd.set_guest_debug(dbg)

    def get_vcpu_events(self) -> KvmVcpuEvents:
        """KVM_GET_VCPU_EVENTS: pending/injected exception, interrupt, NMI, shadow (to save)."""
        return self.fd.get_vcpu_events()

    def set_vcpu_events(self, events: KvmVcpuEvents) -> None:
        """KVM_SET_VCPU_EVENTS (restore); BackendError errno EINVAL for what the kernel refuses."""
        self.fd.set_vcpu_events(events)

    def coalesced_mmio_read(self) -> tuple[int, bool, bytes] | None:
        """Take the oldest entry off the coalesced-MMIO ring: (phys_addr, pio, data), or None if empty.

        Coalesced writes do not exit; the VMM replays them (in order) after each run(), as
        rust-vmm's VcpuFd::coalesced_mmio_read.
        """
        ring = self.fd.mapping.ring
        if ring.first == ring.last:
            return None
        e = ring.coalesced_mmio[ring.first]
        item = (e.phys_addr, bool(e.pio), bytes(e.data[:e.len]))
        ring.first = (ring.first + 1) % len(ring.coalesced_mmio)
        return item

    def close(self) -> None:
        self._release_views()


class Vm:
    """A VM fd: memory slots, vCPUs, ioeventfds, coalesced MMIO.  A context manager: leaving it releases the VM."""

    def __init__(self, fd: VmFd, kvm: "Kvm") -> None:
        self.fd = fd                      # the backend's VmFd (uapi.py)
        self.kvm = kvm                    # keeps /dev/kvm open while the VM lives
        self.vcpus: list[Vcpu] = []

    def set_user_memory_region(self, slot: int, guest_phys_addr: int,
                               memory: "mmap.mmap | bytearray | memoryview", *,
                               readonly: bool = False, flags: int = 0) -> None:
        """KVM_SET_USER_MEMORY_REGION: guest RAM at guest_phys_addr is the VMM's `memory`.

        `memory` is a writable buffer (mmap.mmap(-1, size) as real VMMs use; bytearray works);
        GPA and size page-aligned.  The VM keeps it pinned until it is closed, so the guest
        never sees freed memory.  readonly=True is KVM_MEM_READONLY (a ROM: writes exit as MMIO).
        An empty buffer deletes the slot; the same buffer at another GPA moves it.  What the kernel
        refuses raises BackendError with `.errno` as the kernel's (EINVAL, EEXIST: kvmsim/kvm/memslot.py).
        """
        self.fd.set_user_memory_region(slot, guest_phys_addr, memoryview(memory),
                                       flags | (KVM_MEM_READONLY if readonly else 0))

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP, before the first vCPU: the in-kernel PIC pair (ports 0x20/0xa0, ELCR
        0x4d0) and, for each vCPU, a local APIC (xAPIC at 0xfee00000, x2APIC MSRs, the timer); the sim
        does not model the IO-APIC /dev/kvm adds.  EEXIST a second time, EINVAL once a vCPU exists
        (BackendError.errno)."""
        self.fd.create_irqchip()

    def create_pit2(self, flags: int = 0) -> None:
        """KVM_CREATE_PIT2 after KVM_CREATE_IRQCHIP: the in-kernel 8254 (ports 0x40-0x43, IRQ0);
        ENOENT without the irqchip, EEXIST a second time."""
        self.fd.create_pit2(flags)

    def irq_line(self, irq: int, level: int) -> int:
        """KVM_IRQ_LINE_STATUS: drive GSI `irq` (ISA lines 0-15 reach the PIC) to `level`; the
        status is < 0 when masked or undelivered, 0 when coalesced.  ENXIO without the irqchip."""
        return self.fd.irq_line(irq, level)

    def create_vcpu(self, vcpu_id: int = 0) -> Vcpu:
        """KVM_CREATE_VCPU: in the architectural reset state (CS f000 base 0xffff0000, RIP 0xfff0)."""
        vcpu = Vcpu(self.fd.create_vcpu(vcpu_id), self)
        self.vcpus.append(vcpu)
        return vcpu

    def ioeventfd(self, addr: int, length: int, *, pio: bool = False, datamatch: int | None = None) -> EventFd:
        """KVM_IOEVENTFD: guest writes there signal the returned eventfd instead of exiting.

        length 0 (MMIO only) matches any length; read_count() says how many writes happened.
        """
        return self.fd.ioeventfd(addr, length, pio=pio, datamatch=datamatch)

    def register_coalesced_mmio(self, addr: int, size: int, *, pio: bool = False) -> None:
        """KVM_REGISTER_COALESCED_MMIO: writes there are queued on the ring (Vcpu.coalesced_mmio_read).

        The sim keeps the ring in the first vCPU's mapping, so create a vCPU first.
        """
        self.fd.register_coalesced_mmio(addr, size, pio=pio)

    def enable_user_space_msr(self, mask: KvmMsrExitReason) -> None:
        """KVM_CAP_X86_USER_SPACE_MSR: these RDMSR/WRMSR failures exit as X86Rdmsr / X86Wrmsr."""
        self.fd.enable_user_space_msr(mask)

    def close(self) -> None:
        """Destroy the VM: the vCPUs, kvm_run mappings, eventfds and memory pins go (sim: its unicorn too)."""
        for v in self.vcpus:
            v.close()
        self.vcpus.clear()
        self.fd.close()

    def __enter__(self) -> "Vm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Kvm:
    """/dev/kvm: `backend="sim"` the model of KVM, `backend="kvm"` the host's real one.

    `params` are the simulated module parameters (kvm/vcpu.py KvmParams: mmio_caching,
    enable_ept, ...); the real kernel's are the host's, so they are refused there.
    """

    def __init__(self, backend: str = "sim", *, params: "KvmParams | None" = None,
                 path: str = "/dev/kvm") -> None:
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
        self.backend = backend
        self._params = params
        if backend == "sim":
            from kvmsim.kvm.kvm_main import SimKvm  # late: unicorn is imported only when used

            self._sys: Any = SimKvm()
        else:
            if params is not None:
                raise BackendError("params are the simulated module parameters; a real KVM has the host's")
            from kvmsim.realkvm.backend import RealKvm  # late, as SimKvm: `import kvmsim` stays light

            self._sys = RealKvm(path)

    def api_version(self) -> int:
        """KVM_GET_API_VERSION."""
        return self._sys.api_version() if self.backend == "kvm" else KVM_API_VERSION

    def get_supported_cpuid(self) -> list[KvmCpuidEntry2]:
        """KVM_GET_SUPPORTED_CPUID (sim: the model's default table, the one create_vcpu installs)."""
        if self.backend == "kvm":
            return self._sys.supported_cpuid()
        from kvmsim.kvm.cpuid import default_cpuid_entries  # late: kvm/ loads the whole model (see SimKvm)

        return default_cpuid_entries()

    def create_vm(self) -> Vm:
        """KVM_CREATE_VM."""
        fd = self._sys.create_vm(self._params) if self.backend == "sim" else self._sys.create_vm()
        return Vm(fd, self)

    def close(self) -> None:
        """Close /dev/kvm (on the real backend, after the VMs made from it: create_vcpu asks it the mmap size)."""
        close = getattr(self._sys, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Kvm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BACKENDS", "Debug", "Exception_", "FailEntry", "Hlt", "InternalError", "Intr", "Io", "IoDirection",
           "IrqWindowOpen", "KvmVcpuEvents",
           "Kvm", "Mmio", "Other", "Shutdown", "Vcpu", "VcpuExit", "Vm", "X86Rdmsr", "X86Wrmsr",
           "KvmRegs", "KvmSregs", "KvmCpuidEntry2", "PAGE_SIZE"]
