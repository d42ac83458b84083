"""Model of include/uapi/linux/kvm.h (+ asm/kvm.h, kvm_para.h): the one boundary between kvm/ and vmm/.

The structures are ctypes layouts with the kernel's field names and byte offsets, so the
same userspace code reads the simulated `kvm_run` page and the real one mmap-ed from a
vCPU fd (realkvm/).  Offsets are checked by tests/test_uapi.py against reference §10.2.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Protocol, Sequence

PAGE_SIZE = 4096
KVM_PIO_PAGE_OFFSET = 1
KVM_COALESCED_MMIO_PAGE_OFFSET = 2
KVM_RUN_MMAP_SIZE = 3 * PAGE_SIZE  # kvm_run, pio data, coalesced-MMIO ring


class KvmExit(IntEnum):
    """KVM_EXIT_* (run->exit_reason); printed as KVM_EXIT_<name>."""

    UNKNOWN = 0
    EXCEPTION = 1
    IO = 2
    HYPERCALL = 3
    DEBUG = 4
    HLT = 5
    MMIO = 6
    IRQ_WINDOW_OPEN = 7
    SHUTDOWN = 8
    FAIL_ENTRY = 9
    INTR = 10
    SET_TPR = 11
    TPR_ACCESS = 12
    S390_SIEIC = 13
    S390_RESET = 14
    DCR = 15
    NMI = 16
    INTERNAL_ERROR = 17
    OSI = 18
    PAPR_HCALL = 19
    S390_UCONTROL = 20
    WATCHDOG = 21
    S390_TSCH = 22
    EPR = 23
    SYSTEM_EVENT = 24
    S390_STSI = 25
    IOAPIC_EOI = 26
    HYPERV = 27
    ARM_NISV = 28
    X86_RDMSR = 29
    X86_WRMSR = 30
    DIRTY_RING_FULL = 31
    AP_RESET_HOLD = 32
    X86_BUS_LOCK = 33
    XEN = 34
    RISCV_SBI = 35
    RISCV_CSR = 36
    NOTIFY = 37
    LOONGARCH_IOCSR = 38
    MEMORY_FAULT = 39
    TDX = 40

    @property
    def kname(self) -> str:
        return f"KVM_EXIT_{self.name}"


class KvmInternalError(IntEnum):
    """KVM_INTERNAL_ERROR_* (run->internal.suberror)."""

    EMULATION = 1
    SIMUL_EX = 2
    DELIVERY_EV = 3
    UNEXPECTED_EXIT_REASON = 4


KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1 << 0
KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1


class KvmMsrExitReason(IntFlag):
    """KVM_MSR_EXIT_REASON_* (run->msr.reason and the KVM_CAP_X86_USER_SPACE_MSR mask)."""

    INVAL = 1 << 0
    UNKNOWN = 1 << 1
    FILTER = 1 << 2


class KvmRunFlags(IntFlag):
    """x86 run->flags."""

    KVM_RUN_X86_SMM = 1 << 0
    KVM_RUN_X86_BUS_LOCK = 1 << 1
    KVM_RUN_X86_GUEST_MODE = 1 << 2


class KvmHc(IntEnum):
    """KVM_HC_* hypercall numbers (include/uapi/linux/kvm_para.h)."""

    VAPIC_POLL_IRQ = 1
    MMU_OP = 2
    FEATURES = 3
    PPC_MAP_MAGIC_PAGE = 4
    KICK_CPU = 5
    MIPS_GET_CLOCK_FREQ = 6
    MIPS_EXIT_VM = 7
    MIPS_CONSOLE_OUTPUT = 8
    CLOCK_PAIRING = 9
    SEND_IPI = 10
    SCHED_YIELD = 11
    MAP_GPA_RANGE = 12


KVM_ENOSYS = 1000  # kvm_para.h: hypercall return for an unknown number
KVM_EFAULT = 14
KVM_EINVAL = 22
KVM_E2BIG = 7
KVM_EPERM = 1
KVM_EOPNOTSUPP = 95


# ---------------------------------------------------------------- registers

class KvmRegs(ctypes.Structure):
    """struct kvm_regs (KVM_GET_REGS / KVM_SET_REGS)."""

    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]

    GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")  # encoding order

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n, _ in self._fields_}


class KvmSegment(ctypes.Structure):
    """struct kvm_segment: a descriptor cache entry as userspace sees it."""

    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32),
                ("selector", ctypes.c_uint16), ("type", ctypes.c_uint8),
                ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8), ("db", ctypes.c_uint8),
                ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8),
                ("avl", ctypes.c_uint8), ("unusable", ctypes.c_uint8), ("padding", ctypes.c_uint8)]

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n, _ in self._fields_ if n != "padding"}


class KvmDtable(ctypes.Structure):
    """struct kvm_dtable (GDTR / IDTR)."""

    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16),
                ("padding", ctypes.c_uint16 * 3)]


class KvmSregs(ctypes.Structure):
    """struct kvm_sregs (KVM_GET_SREGS / KVM_SET_SREGS)."""

    SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
    _fields_ = ([(n, KvmSegment) for n in SEGMENTS]
                + [("gdt", KvmDtable), ("idt", KvmDtable)]
                + [(n, ctypes.c_uint64) for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")]
                + [("interrupt_bitmap", ctypes.c_uint64 * 4)])


class KvmCpuidEntry2(ctypes.Structure):
    """struct kvm_cpuid_entry2."""

    _fields_ = [("function", ctypes.c_uint32), ("index", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("eax", ctypes.c_uint32), ("ebx", ctypes.c_uint32), ("ecx", ctypes.c_uint32),
                ("edx", ctypes.c_uint32), ("padding", ctypes.c_uint32 * 3)]


KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0  # sic: the kernel's spelling


# ---------------------------------------------------------------- events and guest debug (issue 14)

class _VcpuEventsException(ctypes.Structure):
    _fields_ = [("injected", ctypes.c_uint8), ("nr", ctypes.c_uint8), ("has_error_code", ctypes.c_uint8),
                ("pending", ctypes.c_uint8), ("error_code", ctypes.c_uint32)]


class _VcpuEventsInterrupt(ctypes.Structure):
    _fields_ = [("injected", ctypes.c_uint8), ("nr", ctypes.c_uint8), ("soft", ctypes.c_uint8),
                ("shadow", ctypes.c_uint8)]


class _VcpuEventsNmi(ctypes.Structure):
    _fields_ = [("injected", ctypes.c_uint8), ("pending", ctypes.c_uint8), ("masked", ctypes.c_uint8),
                ("pad", ctypes.c_uint8)]


class _VcpuEventsSmi(ctypes.Structure):
    _fields_ = [("smm", ctypes.c_uint8), ("pending", ctypes.c_uint8), ("smm_inside_nmi", ctypes.c_uint8),
                ("latched_init", ctypes.c_uint8)]


class _VcpuEventsTripleFault(ctypes.Structure):
    _fields_ = [("pending", ctypes.c_uint8)]


class KvmVcpuEvents(ctypes.Structure):
    """struct kvm_vcpu_events (KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS): the vCPU's pending and
    injected events, so a VMM can save and restore them (64 bytes)."""

    _fields_ = [("exception", _VcpuEventsException), ("interrupt", _VcpuEventsInterrupt),
                ("nmi", _VcpuEventsNmi), ("sipi_vector", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("smi", _VcpuEventsSmi), ("triple_fault", _VcpuEventsTripleFault),
                ("reserved", ctypes.c_uint8 * 26), ("exception_has_payload", ctypes.c_uint8),
                ("exception_payload", ctypes.c_uint64)]

    def as_dict(self) -> dict[str, object]:
        def sub(s: ctypes.Structure) -> dict[str, int]:
            return {n: getattr(s, n) for n, _ in s._fields_ if n != "pad"}
        return {"exception": sub(self.exception), "interrupt": sub(self.interrupt), "nmi": sub(self.nmi),
                "sipi_vector": self.sipi_vector, "flags": self.flags, "smi": sub(self.smi),
                "triple_fault": sub(self.triple_fault), "exception_has_payload": self.exception_has_payload,
                "exception_payload": self.exception_payload}


KVM_VCPUEVENT_VALID_NMI_PENDING = 0x00000001
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x00000002
KVM_VCPUEVENT_VALID_SHADOW = 0x00000004
KVM_VCPUEVENT_VALID_SMM = 0x00000008
KVM_VCPUEVENT_VALID_PAYLOAD = 0x00000010
KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x00000020
KVM_X86_SHADOW_INT_MOV_SS = 0x01   # kvm_vcpu_events.interrupt.shadow
KVM_X86_SHADOW_INT_STI = 0x02


class KvmGuestDebugArch(ctypes.Structure):
    """struct kvm_guest_debug_arch (x86): DR0-3 addresses, DR7 in debugreg[7] (USE_HW_BP)."""

    _fields_ = [("debugreg", ctypes.c_uint64 * 8)]


class KvmGuestDebug(ctypes.Structure):
    """struct kvm_guest_debug (KVM_SET_GUEST_DEBUG)."""

    _fields_ = [("control", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("arch", KvmGuestDebugArch)]


KVM_GUESTDBG_ENABLE = 0x00000001
KVM_GUESTDBG_SINGLESTEP = 0x00000002
KVM_GUESTDBG_USE_SW_BP = 0x00010000
KVM_GUESTDBG_USE_HW_BP = 0x00020000
KVM_GUESTDBG_INJECT_DB = 0x00040000
KVM_GUESTDBG_INJECT_BP = 0x00080000
KVM_GUESTDBG_BLOCKIRQ = 0x00100000


# ---------------------------------------------------------------- kvm_run

class _Io(ctypes.Structure):
    _fields_ = [("direction", ctypes.c_uint8), ("size", ctypes.c_uint8), ("port", ctypes.c_uint16),
                ("count", ctypes.c_uint32), ("data_offset", ctypes.c_uint64)]


class _Mmio(ctypes.Structure):
    _fields_ = [("phys_addr", ctypes.c_uint64), ("data", ctypes.c_uint8 * 8),
                ("len", ctypes.c_uint32), ("is_write", ctypes.c_uint8)]


class _Hypercall(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_uint64), ("args", ctypes.c_uint64 * 6), ("ret", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]  # union { u32 longmode; u64 flags; }


class _Internal(ctypes.Structure):
    _fields_ = [("suberror", ctypes.c_uint32), ("ndata", ctypes.c_uint32),
                ("data", ctypes.c_uint64 * 16)]


class _EmulationFailure(ctypes.Structure):
    _fields_ = [("suberror", ctypes.c_uint32), ("ndata", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("insn_size", ctypes.c_uint8), ("insn_bytes", ctypes.c_uint8 * 15)]


class _Msr(ctypes.Structure):
    _fields_ = [("error", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 7), ("reason", ctypes.c_uint32),
                ("index", ctypes.c_uint32), ("data", ctypes.c_uint64)]


class _Hw(ctypes.Structure):
    _fields_ = [("hardware_exit_reason", ctypes.c_uint64)]


class _FailEntry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", ctypes.c_uint64), ("cpu", ctypes.c_uint32)]


class _Ex(ctypes.Structure):
    _fields_ = [("exception", ctypes.c_uint32), ("error_code", ctypes.c_uint32)]


class _DebugArch(ctypes.Structure):
    _fields_ = [("exception", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("pc", ctypes.c_uint64),
                ("dr6", ctypes.c_uint64), ("dr7", ctypes.c_uint64)]


class _Debug(ctypes.Structure):
    _fields_ = [("arch", _DebugArch)]


class _SystemEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("ndata", ctypes.c_uint32), ("data", ctypes.c_uint64 * 16)]


class _Notify(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32)]


class _ExitUnion(ctypes.Union):
    _fields_ = [("hw", _Hw), ("fail_entry", _FailEntry), ("ex", _Ex), ("io", _Io),
                ("debug", _Debug), ("mmio", _Mmio), ("hypercall", _Hypercall),
                ("internal", _Internal), ("emulation_failure", _EmulationFailure),
                ("msr", _Msr), ("system_event", _SystemEvent), ("notify", _Notify),
                ("padding", ctypes.c_char * 256)]


class KvmRun(ctypes.Structure):
    """struct kvm_run (x86): page 0 of the vCPU mapping; the exit union is anonymous."""

    _anonymous_ = ("u",)
    _fields_ = [("request_interrupt_window", ctypes.c_uint8), ("immediate_exit", ctypes.c_uint8),
                ("padding1", ctypes.c_uint8 * 6), ("exit_reason", ctypes.c_uint32),
                ("ready_for_interrupt_injection", ctypes.c_uint8), ("if_flag", ctypes.c_uint8),
                ("flags", ctypes.c_uint16), ("cr8", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
                ("u", _ExitUnion), ("kvm_valid_regs", ctypes.c_uint64),
                ("kvm_dirty_regs", ctypes.c_uint64)]


class KvmCoalescedMmio(ctypes.Structure):
    """struct kvm_coalesced_mmio: one ring entry."""

    _fields_ = [("phys_addr", ctypes.c_uint64), ("len", ctypes.c_uint32),
                ("pio", ctypes.c_uint32), ("data", ctypes.c_uint8 * 8)]


KVM_COALESCED_MMIO_MAX = (PAGE_SIZE - 8) // ctypes.sizeof(KvmCoalescedMmio)


class KvmCoalescedMmioRing(ctypes.Structure):
    """struct kvm_coalesced_mmio_ring: page KVM_COALESCED_MMIO_PAGE_OFFSET of the mapping."""

    _fields_ = [("first", ctypes.c_uint32), ("last", ctypes.c_uint32),
                ("coalesced_mmio", KvmCoalescedMmio * KVM_COALESCED_MMIO_MAX)]


class KvmRunMapping:
    """The vCPU's mmap: kvm_run at page 0, pio data at page 1, the coalesced ring at page 2."""

    def __init__(self, buf: bytearray | memoryview | object | None = None) -> None:
        self.buf = buf if buf is not None else bytearray(KVM_RUN_MMAP_SIZE)
        self.run = KvmRun.from_buffer(self.buf)
        self.ring = KvmCoalescedMmioRing.from_buffer(self.buf, KVM_COALESCED_MMIO_PAGE_OFFSET * PAGE_SIZE)

    def io_data(self) -> memoryview:
        """The bytes run->io.data_offset points at (size * count of them)."""
        io = self.run.io
        return memoryview(self.buf)[io.data_offset: io.data_offset + io.size * io.count]


# ---------------------------------------------------------------- the ioctl-like API

class KvmIoeventfd(ctypes.Structure):
    """struct kvm_ioeventfd."""

    _fields_ = [("datamatch", ctypes.c_uint64), ("addr", ctypes.c_uint64), ("len", ctypes.c_uint32),
                ("fd", ctypes.c_int32), ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 36)]


class KvmPicState(ctypes.Structure):
    """struct kvm_pic_state: one 8259A of the in-kernel PIC (KVM_GET_IRQCHIP / KVM_SET_IRQCHIP)."""

    _fields_ = [(n, ctypes.c_uint8) for n in (
        "last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select", "poll", "special_mask",
        "init_state", "auto_eoi", "rotate_on_auto_eoi", "special_fully_nested_mode", "init4", "elcr", "elcr_mask")]


class _KvmIrqchipUnion(ctypes.Union):
    _fields_ = [("dummy", ctypes.c_char * 512), ("pic", KvmPicState)]


class KvmIrqchip(ctypes.Structure):
    """struct kvm_irqchip: chip_id KVM_IRQCHIP_PIC_MASTER 0, _PIC_SLAVE 1, _IOAPIC 2."""

    _fields_ = [("chip_id", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("chip", _KvmIrqchipUnion)]


class KvmIrqLevel(ctypes.Structure):
    """struct kvm_irq_level (KVM_IRQ_LINE): the GSI in, and for KVM_IRQ_LINE_STATUS the status out."""

    _fields_ = [("irq", ctypes.c_uint32), ("level", ctypes.c_uint32)]


class KvmPitConfig(ctypes.Structure):
    """struct kvm_pit_config (KVM_CREATE_PIT2)."""

    _fields_ = [("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32 * 15)]


class KvmPitChannelState(ctypes.Structure):
    """struct kvm_pit_channel_state."""

    _fields_ = [("count", ctypes.c_uint32), ("latched_count", ctypes.c_uint16), ("count_latched", ctypes.c_uint8),
                ("status_latched", ctypes.c_uint8), ("status", ctypes.c_uint8), ("read_state", ctypes.c_uint8),
                ("write_state", ctypes.c_uint8), ("write_latch", ctypes.c_uint8), ("rw_mode", ctypes.c_uint8),
                ("mode", ctypes.c_uint8), ("bcd", ctypes.c_uint8), ("gate", ctypes.c_uint8),
                ("count_load_time", ctypes.c_int64)]


class KvmPitState2(ctypes.Structure):
    """struct kvm_pit_state2 (KVM_GET_PIT2 / KVM_SET_PIT2)."""

    _fields_ = [("channels", KvmPitChannelState * 3), ("flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 9)]


KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC = 0, 1, 2


KVM_MEM_LOG_DIRTY_PAGES = 1 << 0   # kvm_userspace_memory_region.flags: KVM_GET_DIRTY_LOG reports written pages
KVM_MEM_READONLY = 1 << 1          # kvm_userspace_memory_region.flags: a ROM (writes exit as MMIO)
KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2


# What a host does to a running vCPU from outside it (HostEvent.request): an ioctl that another
# userspace thread issues while KVM_RUN runs, a signal to the vCPU thread, or an NMI hitting the
# host CPU while the guest runs on it.
HOST_EVENT_REQUESTS = {
    "KVM_NMI": "KVM_NMI on the vCPU fd (arg unused)",
    "KVM_INTERRUPT": "KVM_INTERRUPT on the vCPU fd, userspace PIC (arg: the vector)",
    "SIGNAL": "a signal to the vCPU thread: KVM_RUN returns -EINTR, KVM_EXIT_INTR, without entering (arg unused)",
    "HOST_NMI": "a host NMI after every arg guest instructions without a VM exit (EXCEPTION_NMI exits, "
                "not for the guest)",
    "HOST_TICK": "the host's timer interrupt after every arg guest instructions without a VM exit "
                 "(EXTERNAL_INTERRUPT exits, vector 0xec; not for the guest)",
}


@dataclass(frozen=True)
class HostEvent:
    """One host event on the vCPU's virtual time: plain data, so KVM never holds userspace objects.

    The clock is the vCPU's VM-exit count: the event lands before the VM entry that follows the
    `at_exit`-th VM exit (0: before the first entry), as a real ioctl from another thread lands
    before some entry.  Only the sim has that clock (`host_event()` on its vCPU fd); /dev/kvm has none.
    """

    request: str          # a key of HOST_EVENT_REQUESTS
    arg: int = 0
    at_exit: int = 0


class VcpuFd(Protocol):
    """What userspace can do with a vCPU file descriptor; sim (kvm/) and realkvm/ both provide it."""

    mapping: KvmRunMapping

    def run(self) -> int:
        """KVM_RUN: 0 when kvm_run holds an exit for userspace, else -errno."""

    def get_regs(self) -> KvmRegs: ...
    def set_regs(self, regs: KvmRegs) -> None: ...
    def get_sregs(self) -> KvmSregs: ...
    def set_sregs(self, sregs: KvmSregs) -> None: ...
    def get_cpuid(self) -> list[KvmCpuidEntry2]: ...
    def set_cpuid(self, entries: Sequence[KvmCpuidEntry2]) -> None: ...
    def nmi(self) -> None:
        """KVM_NMI."""

    def interrupt(self, irq: int) -> None:
        """KVM_INTERRUPT (userspace PIC)."""

    def set_guest_debug(self, dbg: KvmGuestDebug) -> None:
        """KVM_SET_GUEST_DEBUG."""

    def get_vcpu_events(self) -> KvmVcpuEvents:
        """KVM_GET_VCPU_EVENTS."""

    def set_vcpu_events(self, events: KvmVcpuEvents) -> None:
        """KVM_SET_VCPU_EVENTS (BackendError with errno EINVAL for what the kernel refuses)."""


class VmFd(Protocol):
    """What userspace can do with a VM file descriptor."""

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory: memoryview,
                               flags: int = 0) -> None: ...
    def ioeventfd(self, addr: int, length: int, *, pio: bool = False,
                  datamatch: int | None = None) -> "EventFd": ...
    def register_coalesced_mmio(self, addr: int, size: int, *, pio: bool = False) -> None: ...
    def enable_user_space_msr(self, mask: KvmMsrExitReason) -> None:
        """KVM_CAP_X86_USER_SPACE_MSR."""

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP (before any vCPU): the in-kernel PIC pair, and a local APIC per vCPU."""

    def create_pit2(self, flags: int = 0) -> None:
        """KVM_CREATE_PIT2 (after KVM_CREATE_IRQCHIP): the in-kernel 8254 on ports 0x40-0x43."""

    def irq_line(self, irq: int, level: int) -> int:
        """KVM_IRQ_LINE_STATUS: GSI `irq` to `level`; the status (< 0 not delivered, 0 coalesced)."""

    def get_irqchip(self, chip_id: int) -> KvmPicState:
        """KVM_GET_IRQCHIP for a PIC (KVM_IRQCHIP_PIC_MASTER / _SLAVE)."""

    def set_irqchip(self, chip_id: int, state: KvmPicState) -> None:
        """KVM_SET_IRQCHIP for a PIC."""

    def get_pit2(self) -> KvmPitState2:
        """KVM_GET_PIT2."""

    def set_pit2(self, state: KvmPitState2) -> None:
        """KVM_SET_PIT2: the channels' state; each count is loaded again (channel 0's timer restarts)."""

    def get_dirty_log(self, slot: int) -> bytes:
        """KVM_GET_DIRTY_LOG: the slot's dirty bitmap (one bit a page, 64-bit words), then cleared
        (unless manual protect is on)."""

    def enable_manual_dirty_log_protect(self, flags: int) -> None:
        """KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: ENABLE 1 | INITIALLY_SET 2."""

    def clear_dirty_log(self, slot: int, first_page: int, num_pages: int, mask: bytes) -> None:
        """KVM_CLEAR_DIRTY_LOG: clear and re-protect the pages of the slot whose bits are set."""

    def create_vcpu(self, vcpu_id: int = 0) -> VcpuFd: ...
    def close(self) -> None: ...


class EventFd(Protocol):
    """An eventfd the VMM can read: how many times the guest kicked it."""

    def read_count(self) -> int: ...
