"""Model of virt/kvm/kvm_main.c: the ioctl surface (VM and vCPU "file descriptors").

`SimKvm().create_vm()` gives a `VmFd`, `vm.create_vcpu()` a `VcpuFd` (uapi.py) — the
same protocol realkvm/ implements over /dev/kvm, so vmm/ cannot tell them apart.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

from kvmsim.errors import BackendError
from kvmsim.kvm import vmx, vmx_controls, x86
from kvmsim.kvm.cpuid import default_cpuid_entries
from kvmsim.kvm.iobus import CoalescedMmio, Ioeventfd
from kvmsim.kvm.msr import VMX_PASSTHROUGH_MSRS
from kvmsim.kvm.reset import X86_EFLAGS_FIXED, kvm_vcpu_reset
from kvmsim.kvm.vcpu import Kvm, KvmParams, KvmVcpu
from kvmsim.uapi import KVM_MEM_READONLY, KvmCpuidEntry2, KvmMsrExitReason, KvmRegs, KvmSregs


def host_address(memory: memoryview) -> int:
    """The host virtual address of a writable buffer (the userspace_addr of a memslot)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(memory))


class SimVcpuFd:
    """A vCPU fd: KVM_RUN and the register ioctls."""

    def __init__(self, vcpu: KvmVcpu) -> None:
        self.vcpu = vcpu
        self.mapping = vcpu.mapping

    def run(self) -> int:
        """KVM_RUN → kvm_arch_vcpu_ioctl_run."""
        return x86.kvm_arch_vcpu_ioctl_run(self.vcpu)

    def get_regs(self) -> KvmRegs:
        from kvmsim.kvm.emulation import flush_emulator_regs

        flush_emulator_regs(self.vcpu)
        return self.vcpu.hw.get_regs()

    def set_regs(self, regs: KvmRegs) -> None:
        """__set_regs: RFLAGS always gets its fixed bit 1 (kvm_set_rflags(regs->rflags | 2))."""
        self.vcpu.arch.emulate_regs_need_sync_from_vcpu = True
        regs = KvmRegs.from_buffer_copy(regs)
        regs.rflags |= X86_EFLAGS_FIXED
        self.vcpu.hw.set_regs(regs)

    def get_sregs(self) -> KvmSregs:
        return x86.kvm_arch_vcpu_ioctl_get_sregs(self.vcpu)

    def set_sregs(self, sregs: KvmSregs) -> None:
        """KVM_SET_SREGS; an invalid state fails as the real ioctl does (realkvm/backend.py's message)."""
        if x86.kvm_arch_vcpu_ioctl_set_sregs(self.vcpu, sregs) == -x86.EINVAL:
            raise BackendError("KVM_SET_SREGS failed: EINVAL (Invalid argument)")

    def get_cpuid(self) -> list[KvmCpuidEntry2]:
        """KVM_GET_CPUID2: copies, as the ioctl copies out to userspace."""
        return [KvmCpuidEntry2.from_buffer_copy(e) for e in self.vcpu.arch.cpuid_entries]

    def set_cpuid(self, entries: Sequence[KvmCpuidEntry2]) -> None:
        self.vcpu.arch.cpuid_entries = list(entries)
        vmx_controls.vmx_vcpu_after_set_cpuid(self.vcpu)   # kvm_vcpu_after_set_cpuid

    def nmi(self) -> None:
        x86.kvm_inject_nmi(self.vcpu)

    def interrupt(self, irq: int) -> None:
        self.vcpu.arch.interrupt_pending = irq
        self.vcpu.requests.add("KVM_REQ_EVENT")

    def kick(self) -> None:
        """What a signal to the vCPU thread does: KVM_RUN returns -EINTR soon."""
        self.vcpu.hw.request_stop()


class SimVmFd:
    """A VM fd: memslots, ioeventfds, coalesced MMIO, capabilities, vCPUs."""

    def __init__(self, params: KvmParams | None = None) -> None:
        self.kvm = Kvm(params)

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory: memoryview,
                               flags: int = 0) -> None:
        if guest_phys_addr & 0xFFF or len(memory) & 0xFFF:
            raise BackendError(f"KVM_SET_USER_MEMORY_REGION: slot {slot} not page aligned (EINVAL)")
        if flags & ~KVM_MEM_READONLY:
            raise BackendError(f"KVM_SET_USER_MEMORY_REGION: slot {slot} flags {flags:#x} (EINVAL)")
        self.kvm.memslots[slot] = (guest_phys_addr, len(memory), memory)
        if flags & KVM_MEM_READONLY:
            self.kvm.readonly_slots.add(slot)
        for vcpu in self.kvm.vcpus:
            vcpu.hw.map_memslot(slot, guest_phys_addr, len(memory), host_address(memory),
                                slot in self.kvm.readonly_slots)

    def ioeventfd(self, addr: int, length: int, *, pio: bool = False, datamatch: int | None = None) -> Ioeventfd:
        """KVM_IOEVENTFD: MMIO length 0 goes on KVM_FAST_MMIO_BUS (and KVM_MMIO_BUS), as kvm_assign_ioeventfd."""
        if not length and datamatch is not None:   # kvm_ioeventfd: "no length can't be combined with DATAMATCH"
            raise BackendError("KVM_IOEVENTFD failed: EINVAL (datamatch with length 0)")
        dev = Ioeventfd(addr, length, datamatch)
        if pio:
            self.kvm.buses["KVM_PIO_BUS"].register(addr, length, dev)
        else:
            self.kvm.buses["KVM_MMIO_BUS"].register(addr, length, dev)
            if length == 0:
                self.kvm.buses["KVM_FAST_MMIO_BUS"].register(addr, 0, dev)
        return dev

    def register_coalesced_mmio(self, addr: int, size: int, *, pio: bool = False) -> None:
        if not self.kvm.vcpus:
            raise BackendError("KVM_REGISTER_COALESCED_MMIO before a vCPU: the ring lives in its mapping")
        dev = CoalescedMmio(self.kvm.vcpus[0].mapping.ring, addr, size, pio)
        self.kvm.buses["KVM_PIO_BUS" if pio else "KVM_MMIO_BUS"].register(addr, size, dev)

    def enable_user_space_msr(self, mask: KvmMsrExitReason) -> None:
        self.kvm.user_space_msr_mask = KvmMsrExitReason(mask)

    def create_vcpu(self, vcpu_id: int = 0) -> SimVcpuFd:
        vcpu = KvmVcpu(self.kvm, vcpu_id)
        vcpu.hw.msr_passthrough = set(VMX_PASSTHROUGH_MSRS)   # vmx_vcpu_create: MSR bitmap
        vcpu.hw.exception_bitmap = vmx.vmx_exception_bitmap(self.kvm.params)
        vmx_controls.init_vmcs(vcpu)
        kvm_vcpu_reset(vcpu)                                  # kvm_arch_vcpu_create, after vcpu_create
        vcpu.arch.cpuid_entries = default_cpuid_entries()
        vmx_controls.vmx_vcpu_after_set_cpuid(vcpu)        # the default CPUID table above
        for slot, (gpa, size, mem) in self.kvm.memslots.items():
            vcpu.hw.map_memslot(slot, gpa, size, host_address(mem), slot in self.kvm.readonly_slots)
        self.kvm.vcpus.append(vcpu)
        return SimVcpuFd(vcpu)

    def __enter__(self) -> "SimVmFd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closing the VM fd: the vCPUs' engines go now, and the memslots let go of guest RAM
        (their views would otherwise keep the VMM's mmaps from closing)."""
        for vcpu in self.kvm.vcpus:
            vcpu.hw.power_off()
        self.kvm.vcpus.clear()
        for _gpa, _size, mem in self.kvm.memslots.values():
            if isinstance(mem, memoryview):
                try:
                    mem.release()
                except BufferError:
                    pass   # exported further (a debugger's view): it goes with its last holder
        self.kvm.memslots.clear()
        self.kvm.readonly_slots.clear()


class SimKvm:
    """/dev/kvm for the simulation."""

    vendor_module = "kvmsim (model of kvm_intel)"

    def create_vm(self, params: KvmParams | None = None) -> SimVmFd:
        return SimVmFd(params)
