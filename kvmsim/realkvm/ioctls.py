"""Model of the ioctl numbers in include/uapi/linux/kvm.h (and asm-generic/ioctl.h's _IO macros).

Numbers are computed the way the C preprocessor does, from the same (type, nr, size) triples,
so a wrong struct size shows up as ENOTTY from the kernel (and in tests/realkvm, which compares
them with a C program compiled against the host's <linux/kvm.h> when gcc is present).
"""

from __future__ import annotations

import ctypes

from kvmsim.uapi import (KvmCpuidEntry2, KvmGuestDebug, KvmIoeventfd, KvmIrqchip, KvmIrqLevel, KvmPicState, KvmPitConfig,
                         KvmPitState2, KvmRegs, KvmSregs, KvmVcpuEvents)

# asm-generic/ioctl.h (x86 uses the generic layout)
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction: int, typ: int, nr: int, size: int) -> int:
    return (direction << _IOC_DIRSHIFT) | (typ << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)


def _IO(typ: int, nr: int) -> int:
    return _IOC(_IOC_NONE, typ, nr, 0)


def _IOR(typ: int, nr: int, size: int) -> int:
    return _IOC(_IOC_READ, typ, nr, size)


def _IOW(typ: int, nr: int, size: int) -> int:
    return _IOC(_IOC_WRITE, typ, nr, size)


def _IOWR(typ: int, nr: int, size: int) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, typ, nr, size)


KVMIO = 0xAE

# ---------------------------------------------------------------- argument structs not in uapi.py


class KvmUserspaceMemoryRegion(ctypes.Structure):
    """struct kvm_userspace_memory_region."""

    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("guest_phys_addr", ctypes.c_uint64),
                ("memory_size", ctypes.c_uint64), ("userspace_addr", ctypes.c_uint64)]


class KvmCoalescedMmioZone(ctypes.Structure):
    """struct kvm_coalesced_mmio_zone (the u32 pad is a union with `pio`)."""

    _fields_ = [("addr", ctypes.c_uint64), ("size", ctypes.c_uint32), ("pio", ctypes.c_uint32)]


class KvmEnableCap(ctypes.Structure):
    """struct kvm_enable_cap."""

    _fields_ = [("cap", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("args", ctypes.c_uint64 * 4),
                ("pad", ctypes.c_uint8 * 64)]


class KvmInterrupt(ctypes.Structure):
    """struct kvm_interrupt."""

    _fields_ = [("irq", ctypes.c_uint32)]


class KvmMsrEntry(ctypes.Structure):
    """struct kvm_msr_entry."""

    _fields_ = [("index", ctypes.c_uint32), ("reserved", ctypes.c_uint32), ("data", ctypes.c_uint64)]


class KvmMsrsHeader(ctypes.Structure):
    """struct kvm_msrs without its flexible entries[] array."""

    _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class KvmCpuid2Header(ctypes.Structure):
    """struct kvm_cpuid2 without its flexible entries[] array."""

    _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32)]


def kvm_cpuid2(n: int) -> type[ctypes.Structure]:
    """struct kvm_cpuid2 with room for n entries."""
    return type(f"KvmCpuid2_{n}", (ctypes.Structure,), {
        "_fields_": [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32),
                     ("entries", KvmCpuidEntry2 * n)]})


def kvm_msrs(n: int) -> type[ctypes.Structure]:
    """struct kvm_msrs with room for n entries."""
    return type(f"KvmMsrs_{n}", (ctypes.Structure,), {
        "_fields_": [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("entries", KvmMsrEntry * n)]})


_u64 = ctypes.sizeof(ctypes.c_uint64)

# ---------------------------------------------------------------- system ioctls (/dev/kvm)
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_GET_MSR_INDEX_LIST = _IOWR(KVMIO, 0x02, ctypes.sizeof(ctypes.c_uint32))  # struct kvm_msr_list header
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, ctypes.sizeof(KvmCpuid2Header))

# ---------------------------------------------------------------- VM ioctls
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, ctypes.sizeof(KvmUserspaceMemoryRegion))


class KvmDirtyLog(ctypes.Structure):
    """struct kvm_dirty_log: the slot and a pointer to userspace's bitmap buffer."""

    _fields_ = [("slot", ctypes.c_uint32), ("padding1", ctypes.c_uint32), ("dirty_bitmap", ctypes.c_uint64)]


KVM_GET_DIRTY_LOG = _IOW(KVMIO, 0x42, ctypes.sizeof(KvmDirtyLog))


class KvmClearDirtyLog(ctypes.Structure):
    """struct kvm_clear_dirty_log: which pages of the slot, and the bitmap of those to clear."""

    _fields_ = [("slot", ctypes.c_uint32), ("num_pages", ctypes.c_uint32), ("first_page", ctypes.c_uint64),
                ("dirty_bitmap", ctypes.c_uint64)]


KVM_CLEAR_DIRTY_LOG = _IOWR(KVMIO, 0xC0, ctypes.sizeof(KvmClearDirtyLog))
KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, _u64)
KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60)
KVM_IRQ_LINE = _IOW(KVMIO, 0x61, ctypes.sizeof(KvmIrqLevel))
KVM_GET_IRQCHIP = _IOWR(KVMIO, 0x62, ctypes.sizeof(KvmIrqchip))
KVM_SET_IRQCHIP = _IOR(KVMIO, 0x63, ctypes.sizeof(KvmIrqchip))
KVM_IRQ_LINE_STATUS = _IOWR(KVMIO, 0x67, ctypes.sizeof(KvmIrqLevel))
KVM_CREATE_PIT2 = _IOW(KVMIO, 0x77, ctypes.sizeof(KvmPitConfig))
KVM_GET_PIT2 = _IOR(KVMIO, 0x9F, ctypes.sizeof(KvmPitState2))
KVM_SET_PIT2 = _IOW(KVMIO, 0xA0, ctypes.sizeof(KvmPitState2))
KVM_REGISTER_COALESCED_MMIO = _IOW(KVMIO, 0x67, ctypes.sizeof(KvmCoalescedMmioZone))
KVM_UNREGISTER_COALESCED_MMIO = _IOW(KVMIO, 0x68, ctypes.sizeof(KvmCoalescedMmioZone))
KVM_IOEVENTFD = _IOW(KVMIO, 0x79, ctypes.sizeof(KvmIoeventfd))
KVM_ENABLE_CAP = _IOW(KVMIO, 0xA3, ctypes.sizeof(KvmEnableCap))  # VM and vCPU ioctl

# ---------------------------------------------------------------- vCPU ioctls
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, ctypes.sizeof(KvmRegs))
KVM_SET_REGS = _IOW(KVMIO, 0x82, ctypes.sizeof(KvmRegs))
KVM_GET_SREGS = _IOR(KVMIO, 0x83, ctypes.sizeof(KvmSregs))
KVM_SET_SREGS = _IOW(KVMIO, 0x84, ctypes.sizeof(KvmSregs))
KVM_INTERRUPT = _IOW(KVMIO, 0x86, ctypes.sizeof(KvmInterrupt))
KVM_GET_MSRS = _IOWR(KVMIO, 0x88, ctypes.sizeof(KvmMsrsHeader))
KVM_SET_MSRS = _IOW(KVMIO, 0x89, ctypes.sizeof(KvmMsrsHeader))
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, ctypes.sizeof(KvmCpuid2Header))
KVM_GET_CPUID2 = _IOWR(KVMIO, 0x91, ctypes.sizeof(KvmCpuid2Header))
KVM_NMI = _IO(KVMIO, 0x9A)
KVM_SET_GUEST_DEBUG = _IOW(KVMIO, 0x9B, ctypes.sizeof(KvmGuestDebug))
KVM_GET_VCPU_EVENTS = _IOR(KVMIO, 0x9F, ctypes.sizeof(KvmVcpuEvents))
KVM_SET_VCPU_EVENTS = _IOW(KVMIO, 0xA0, ctypes.sizeof(KvmVcpuEvents))

# Every name above, for error messages (number → "KVM_RUN").
IOCTL_NAMES: dict[int, str] = {v: k for k, v in dict(globals()).items()
                               if k.startswith("KVM_") and isinstance(v, int) and k != "KVMIO"}

# ---------------------------------------------------------------- KVM_CAP_* used here (kvm.h)
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_COALESCED_MMIO = 15
KVM_CAP_SYNC_MMU = 16
KVM_CAP_USER_NMI = 22
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_IOEVENTFD = 36
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_COALESCED_PIO = 162
KVM_CAP_X86_USER_SPACE_MSR = 188
KVM_CAP_X86_MSR_FILTER = 189
KVM_CAP_EXIT_ON_EMULATION_FAILURE = 204
KVM_CAP_IOEVENTFD_ANY_LENGTH = 122

CAP_NAMES: dict[int, str] = {v: k for k, v in dict(globals()).items() if k.startswith("KVM_CAP_")}

# kvm_userspace_memory_region.flags
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
