"""Model of virt/kvm/kvm_main.c: the ioctl surface (VM and vCPU "file descriptors").

`SimKvm().create_vm()` gives a `VmFd`, `vm.create_vcpu()` a `VcpuFd` (uapi.py) — the
same protocol realkvm/ implements over /dev/kvm, so vmm/ cannot tell them apart.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

from kvmsim.errors import BackendError
from kvmsim.kvm import dirty_log, guest_debug, i8254, i8259, irq_comm, lapic, vcpu_events, vmx, x86
from kvmsim.kvm.cpuid import default_cpuid_entries
from kvmsim.kvm.iobus import CoalescedMmio, Ioeventfd
from kvmsim.kvm.kvm_x86_ops import kvm_x86_ops
from kvmsim.kvm.memslot import KvmUserspaceMemoryRegion, kvm_set_memory_region_check
from kvmsim.kvm.reset import X86_EFLAGS_FIXED, kvm_vcpu_reset
from kvmsim.kvm.trace import install_trace_clock, remove_trace_clock
from kvmsim.kvm.vcpu import Kvm, KvmParams, KvmVcpu
from kvmsim.kvm.x86_emulate import flush_emulator_regs
from kvmsim.uapi import (HOST_EVENT_REQUESTS, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MEM_READONLY,
                         KvmPicState, KvmPitState2, HostEvent, KvmCpuidEntry2, KvmGuestDebug, KvmMsrExitReason,
                         KvmRegs, KvmSregs, KvmVcpuEvents)


def host_address(memory: memoryview) -> int:
    """The host virtual address of a writable buffer (the userspace_addr of a memslot)."""
    if memory.nbytes == 0:
        return 0   # an empty buffer has none: a slot deletion passes 0
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
        """__get_regs: RFLAGS without the TF that KVM_GUESTDBG_SINGLESTEP set (kvm_get_rflags)."""
        flush_emulator_regs(self.vcpu)
        regs = self.vcpu.hw.get_regs()
        if self.vcpu.guest_debug:
            regs.rflags = guest_debug.kvm_get_rflags(self.vcpu)
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        """__set_regs: RFLAGS always gets its fixed bit 1 (kvm_set_rflags(regs->rflags | 2))."""
        self.vcpu.arch.emulate_regs_need_sync_from_vcpu = True
        regs = KvmRegs.from_buffer_copy(regs)
        regs.rflags |= X86_EFLAGS_FIXED
        self.vcpu.hw.set_regs(regs)
        if self.vcpu.guest_debug:
            guest_debug.kvm_set_rflags(self.vcpu, regs.rflags)   # TF back on at singlestep_rip
        self.vcpu.hw.entry_checks_due = True   # RIP and RFLAGS are checked at the next VM entry
        self.vcpu.hw.written_rflags = regs.rflags

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
        lapic.kvm_update_cpuid_apic_bit(self.vcpu)    # kvm_vcpu_after_set_cpuid: runtime bits,
        lapic.kvm_lapic_after_set_cpuid(self.vcpu)    # ... the APIC's timer modes and version
        kvm_x86_ops.vcpu_after_set_cpuid(self.vcpu)   # ... then the vendor's

    def nmi(self) -> None:
        x86.kvm_inject_nmi(self.vcpu)

    def virtual_ns(self) -> int:
        """The vCPU's virtual clock (lapic.kvm_virtual_ns): what its TSC and LAPIC timer run on, for
        the VMM's time devices (runner._platform).  Sim only: /dev/kvm runs on the host clock."""
        return lapic.kvm_virtual_ns(self.vcpu)

    def interrupt(self, irq: int) -> None:
        """KVM_INTERRUPT; EINVAL for a vector >= 256, ENXIO with an in-kernel irqchip (as the ioctl)."""
        r = x86.kvm_vcpu_ioctl_interrupt(self.vcpu, irq)
        if r < 0:
            name = {-x86.EINVAL: "EINVAL (Invalid argument)", -x86.ENXIO: "ENXIO (No such device or address)"}[r]
            raise BackendError(f"KVM_INTERRUPT failed: {name}", errno=-r)

    def get_vcpu_events(self) -> KvmVcpuEvents:
        return vcpu_events.kvm_vcpu_ioctl_x86_get_vcpu_events(self.vcpu)

    def set_vcpu_events(self, events: KvmVcpuEvents) -> None:
        if vcpu_events.kvm_vcpu_ioctl_x86_set_vcpu_events(self.vcpu, events) < 0:
            raise BackendError("KVM_SET_VCPU_EVENTS failed: EINVAL (Invalid argument)", errno=x86.EINVAL)

    def set_guest_debug(self, dbg: KvmGuestDebug) -> None:
        r = guest_debug.kvm_arch_vcpu_ioctl_set_guest_debug(self.vcpu, dbg)
        if r < 0:
            raise BackendError(f"KVM_SET_GUEST_DEBUG failed: {'EBUSY (Device or resource busy)' if r == -16 else 'EINVAL (Invalid argument)'}",
                               errno=-r)

    def host_event(self, ev: HostEvent) -> None:
        """Queue a uapi.HostEvent on this vCPU's virtual time (its VM-exit count); one already due
        lands before the next entry.  Sim only: /dev/kvm has no such clock."""
        if ev.request not in HOST_EVENT_REQUESTS:
            raise BackendError(f"unknown host event {ev.request!r} (one of {', '.join(HOST_EVENT_REQUESTS)})")
        self.vcpu.host_events.setdefault(max(ev.at_exit, self.vcpu.stat.exits), []).append(ev)

    def kick(self) -> None:
        """What a signal to the vCPU thread does: KVM_RUN returns -EINTR soon."""
        self.vcpu.hw.request_stop()


class SimVmFd:
    """A VM fd: memslots, ioeventfds, coalesced MMIO, capabilities, vCPUs."""

    def __init__(self, params: KvmParams | None = None) -> None:
        vmx.vmx_init()     # kvm_intel is loaded before a VM exists (a no-op once it is)
        self.kvm = Kvm(params)
        self._flags: dict[int, int] = {}    # slot -> kvm_userspace_memory_region.flags

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory: memoryview,
                               flags: int = 0) -> None:
        """KVM_SET_USER_MEMORY_REGION: userspace_addr and memory_size are the buffer's; its errors
        (kvm_set_memory_region_check) raise BackendError with .errno as the kernel's."""
        memory = memoryview(memory).cast("B") if memory.nbytes else memory
        mem = KvmUserspaceMemoryRegion(slot & 0xFFFF_FFFF, flags & 0xFFFF_FFFF, guest_phys_addr,
                                       memory.nbytes, host_address(memory))
        err, change = kvm_set_memory_region_check(self._slot_table(), self.kvm.params.enable_ept, mem)
        if err is not None:
            raise BackendError(err.message(), errno=-err.errno)
        if change == "none":
            return
        if change in ("delete", "move"):                 # kvm_set_memslot: the old mapping goes first
            old = self.kvm.memslots.pop(mem.slot)
            for vcpu in self.kvm.vcpus:
                vcpu.hw.unmap_memslot(mem.slot)
            if change == "delete":
                self.kvm.readonly_slots.discard(mem.slot)
                dirty_log.kvm_commit_dirty_logging(self.kvm, mem.slot, 0)
                self._flags.pop(mem.slot, None)
                if isinstance(old[2], memoryview):
                    try:
                        old[2].release()
                    except BufferError:
                        pass
                return
        self.kvm.memslots[mem.slot] = (guest_phys_addr, mem.memory_size, memory)
        self._flags[mem.slot] = mem.flags
        dirty_log.kvm_commit_dirty_logging(self.kvm, mem.slot, mem.flags)
        if change == "flags":
            return   # only KVM_MEM_LOG_DIRTY_PAGES can change
        if flags & KVM_MEM_READONLY:
            self.kvm.readonly_slots.add(mem.slot)
        first, last = guest_phys_addr >> 12, (guest_phys_addr + mem.memory_size - 1) >> 12
        for vcpu in self.kvm.vcpus:
            # Simplified: a new memslot generation makes KVM rebuild stale MMIO SPTEs; here those in the slot go.
            vcpu.hw.ept_mmio_gfns = {g for g in vcpu.hw.ept_mmio_gfns if not first <= g <= last}
            vcpu.hw.map_memslot(mem.slot, guest_phys_addr, mem.memory_size, mem.userspace_addr,
                                mem.slot in self.kvm.readonly_slots)

    def _slot_table(self) -> dict[int, tuple[int, int, int, int]]:
        return {s: (g, sz, host_address(m), self._flags.get(s, 0)) for s, (g, sz, m) in self.kvm.memslots.items()}

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

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP: the PIC pair (i8259.py) now, and an in-kernel LAPIC (lapic.py) for each
        vCPU created from now on.  Simplified: the IO-APIC it also creates is not modelled.  EEXIST once
        made, EINVAL after a vCPU exists, as kvm_arch_vm_ioctl."""
        if self.kvm.irqchip:
            raise BackendError("KVM_CREATE_IRQCHIP failed: EEXIST (File exists)", errno=17)
        if self.kvm.vcpus:
            raise BackendError("KVM_CREATE_IRQCHIP failed: EINVAL (Invalid argument)", errno=22)
        i8259.kvm_pic_init(self.kvm)
        self.kvm.irqchip = True

    def create_pit2(self, flags: int = 0) -> None:
        """KVM_CREATE_PIT2: EEXIST for a second one, ENOENT without the in-kernel PIC."""
        if self.kvm.vpit is not None:
            raise BackendError("KVM_CREATE_PIT2 failed: EEXIST (File exists)", errno=17)
        if self.kvm.vpic is None:
            raise BackendError("KVM_CREATE_PIT2 failed: ENOENT (No such file or directory)", errno=2)
        self.kvm.vpit = i8254.kvm_create_pit(self.kvm, flags)

    def irq_line(self, irq: int, level: int) -> int:
        """KVM_IRQ_LINE_STATUS: ENXIO without an in-kernel irqchip; else kvm_set_irq's status."""
        r, status = irq_comm.kvm_vm_ioctl_irq_line(self.kvm, irq, level)
        if r < 0:
            raise BackendError("KVM_IRQ_LINE_STATUS failed: ENXIO (No such device or address)", errno=-r)
        return status

    def _pic_chip(self, name: str, chip_id: int) -> None:
        if self.kvm.vpic is None:
            raise BackendError(f"{name} failed: ENXIO (No such device or address)", errno=6)
        if chip_id not in (KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE):
            # Simplified: no in-kernel IO-APIC (KVM_IRQCHIP_IOAPIC), so its chip id is refused here.
            raise BackendError(f"{name} failed: EINVAL (Invalid argument)", errno=22)

    def get_irqchip(self, chip_id: int) -> KvmPicState:
        self._pic_chip("KVM_GET_IRQCHIP", chip_id)
        out = KvmPicState()
        for f, v in i8259.kvm_get_pic_state(self.kvm, chip_id).items():
            setattr(out, f, v)
        return out

    def set_irqchip(self, chip_id: int, state: KvmPicState) -> None:
        self._pic_chip("KVM_SET_IRQCHIP", chip_id)
        i8259.kvm_set_pic_state(self.kvm, chip_id, {f: getattr(state, f) for f in i8259.PIC_STATE_FIELDS})

    def get_pit2(self) -> KvmPitState2:
        if self.kvm.vpit is None:
            raise BackendError("KVM_GET_PIT2 failed: ENXIO (No such device or address)", errno=6)
        channels, flags = i8254.kvm_vm_ioctl_get_pit2(self.kvm)
        out = KvmPitState2(flags=flags)
        for c, st in zip(out.channels, channels):
            for f, v in st.items():
                setattr(c, f, v)
        return out

    def set_pit2(self, state: KvmPitState2) -> None:
        if self.kvm.vpit is None:
            raise BackendError("KVM_SET_PIT2 failed: ENXIO (No such device or address)", errno=6)
        i8254.kvm_vm_ioctl_set_pit2(self.kvm, [{f: getattr(c, f) for f in i8254.CHANNEL_STATE_FIELDS}
                                               for c in state.channels], state.flags)

    def create_vcpu(self, vcpu_id: int = 0) -> SimVcpuFd:
        vcpu = KvmVcpu(self.kvm, vcpu_id)
        install_trace_clock(vcpu.hw)                          # probe events now count its retired instructions
        lapic.kvm_create_lapic(vcpu)                          # kvm_arch_vcpu_create, before the vendor's
        kvm_x86_ops.vcpu_create(vcpu)                         # kvm_arch_vcpu_create → vmx_vcpu_create
        kvm_vcpu_reset(vcpu)                                  # kvm_arch_vcpu_create, after vcpu_create
        vcpu.arch.cpuid_entries = default_cpuid_entries()
        lapic.kvm_lapic_after_set_cpuid(vcpu)
        kvm_x86_ops.vcpu_after_set_cpuid(vcpu)             # the default CPUID table above
        for slot, (gpa, size, mem) in self.kvm.memslots.items():
            vcpu.hw.map_memslot(slot, gpa, size, host_address(mem), slot in self.kvm.readonly_slots)
            if slot in self.kvm.dirty_log_slots:              # its EPT entries are built clean
                vcpu.hw.ept_clear_dirty(range(gpa >> 12, (gpa + size) >> 12))
        self.kvm.vcpus.append(vcpu)
        if self.kvm.dirty_log_slots:
            dirty_log.kvm_commit_dirty_logging(self.kvm, next(iter(self.kvm.dirty_log_slots)),
                                               dirty_log.KVM_MEM_LOG_DIRTY_PAGES)
        return SimVcpuFd(vcpu)

    def enable_manual_dirty_log_protect(self, flags: int) -> None:
        """KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): ENABLE 1 | INITIALLY_SET 2 (EINVAL for others)."""
        if flags & ~3:
            raise BackendError("KVM_ENABLE_CAP failed: EINVAL (Invalid argument)", errno=22)
        self.kvm.manual_dirty_log_protect = flags

    def clear_dirty_log(self, slot: int, first_page: int, num_pages: int, mask: bytes) -> None:
        """KVM_CLEAR_DIRTY_LOG: clear and re-protect the pages whose bits `mask` sets."""
        r = dirty_log.kvm_vm_ioctl_clear_dirty_log(self.kvm, slot, first_page, num_pages, mask)
        if r:
            name = {-22: "EINVAL (Invalid argument)", -2: "ENOENT (No such file or directory)"}[r]
            raise BackendError(f"KVM_CLEAR_DIRTY_LOG failed: {name}", errno=-r)

    def get_dirty_log(self, slot: int) -> bytes:
        """KVM_GET_DIRTY_LOG: the slot's bitmap, one bit a page (a slot without
        KVM_MEM_LOG_DIRTY_PAGES: BackendError ENOENT, as kvm_get_dirty_log_protect)."""
        out = dirty_log.kvm_vm_ioctl_get_dirty_log(self.kvm, slot)
        if out is None:
            raise BackendError(f"KVM_GET_DIRTY_LOG: slot {slot} does not log dirty pages (ENOENT)", errno=2)
        return out

    def __enter__(self) -> "SimVmFd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closing the VM fd: the vCPUs' engines go now, and the memslots let go of guest RAM
        (their views would otherwise keep the VMM's mmaps from closing)."""
        for vcpu in self.kvm.vcpus:
            remove_trace_clock(vcpu.hw)
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
