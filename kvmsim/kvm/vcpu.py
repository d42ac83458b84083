"""Model of struct kvm_vcpu / kvm_vcpu_arch / struct kvm (include/linux/kvm_host.h, asm/kvm_host.h).

Only state lives here; the functions that use it are in x86.py, vmx.py and friends,
under the kernel's names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from kvmsim.hw.apicdef import APIC_BASE_RESET
from kvmsim.hw.cpu import SiliconVcpu
from kvmsim.kvm.iobus import KvmIoBus
from kvmsim.uapi import HostEvent, KvmCpuidEntry2, KvmMsrExitReason, KvmRunMapping

# Completion callbacks (vcpu->arch.complete_userspace_io): 1 resume, 0 back to userspace, <0 -errno.
CompleteUserspaceIo = Callable[["KvmVcpu"], int]


@dataclass
class KvmParams:
    """Module parameters and per-VM capabilities that change what KVM does."""

    enable_ept: bool = True
    unrestricted_guest: bool = True
    emulate_invalid_guest_state: bool = True   # kvm_intel.emulate_invalid_guest_state
    force_emulation_prefix: bool = False
    enable_vmware_backdoor: bool = False
    host_is_hypervisor: bool = False       # X86_FEATURE_HYPERVISOR on the host
    mmio_caching: bool = True              # kvm.enable_mmio_caching
    exit_on_emulation_error: bool = False  # KVM_CAP_EXIT_ON_EMULATION_FAILURE
    quirk_out_7e_inc_rip: bool = True      # KVM_X86_QUIRK_OUT_7E_INC_RIP (default on)
    disable_exits: int = 0                 # KVM_CAP_X86_DISABLE_EXITS: MWAIT 1, HLT 2, PAUSE 4, CSTATE 8
    ple_gap: int = 128                     # kvm_intel.ple_gap (0: no PAUSE-loop exiting)
    host_umip: bool = False                # X86_FEATURE_UMIP on the host (Cascade Lake: no, KVM emulates it)
    # issue 14 (handlers): kvm_intel PLE knobs, quirks and capabilities the remaining exit handlers read
    ple_window: int = 4096                 # kvm_intel.ple_window (KVM_VMX_DEFAULT_PLE_WINDOW)
    ple_window_grow: int = 2               # kvm_intel.ple_window_grow
    ple_window_shrink: int = 0             # kvm_intel.ple_window_shrink (0: back to ple_window at sched-in)
    ple_window_max: int = 0xFFFF_FFFF      # kvm_intel.ple_window_max (UINT_MAX)
    quirk_mwait_never_ud_faults: bool = True   # KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS (default on)
    bus_lock_detection_exit: bool = False  # KVM_CAP_X86_BUS_LOCK_EXIT with KVM_BUS_LOCK_DETECTION_EXIT
    notify_vmexit_flags: int = 0           # KVM_CAP_X86_NOTIFY_VMEXIT: ENABLED 1, USER 2
    notify_window: int = 0                 # ... its window (bits 63:32 of the cap's argument)
    emulator: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class KvmPioRequest:
    """struct kvm_pio_request (vcpu->arch.pio)."""

    linear_rip: int = 0
    count: int = 0
    is_in: bool = False
    port: int = 0
    size: int = 0


KVM_MAX_MMIO_FRAGMENTS = 2   # kvm_host.h: an access spans at most two pages


@dataclass(slots=True)
class KvmMmioFragment:
    """struct kvm_mmio_fragment: data is (buffer, offset) into the emulator's read cache or a bytes copy."""

    gpa: int
    data: bytearray
    offset: int
    len: int


@dataclass(slots=True)
class KvmQueuedException:
    """vcpu->arch.exception: pending (not yet injected) exception."""

    pending: bool = False
    injected: bool = False
    vector: int = 0
    has_error_code: bool = False
    error_code: int = 0
    has_payload: bool = False
    payload: int = 0


@dataclass(slots=True)
class KvmQueuedInterrupt:
    """struct kvm_queued_interrupt (vcpu->arch.interrupt): an interrupt already acknowledged (with a
    userspace PIC: the vector of KVM_INTERRUPT), injected at the next VM entry until delivered."""

    injected: bool = False
    soft: bool = False
    nr: int = 0


class KvmVcpuStat:
    """struct kvm_vcpu_stat, the counters perf kvm stat and /sys/kernel/debug/kvm show."""

    def __init__(self) -> None:
        self.exits: int = 0
        self.io_exits: int = 0
        self.mmio_exits: int = 0
        self.halt_exits: int = 0
        self.nmi_window_exits: int = 0
        self.irq_window_exits: int = 0
        self.irq_exits: int = 0
        self.nmi_injections: int = 0
        self.irq_injections: int = 0
        self.insn_emulation: int = 0
        self.insn_emulation_fail: int = 0
        self.hypercalls: int = 0
        self.request_irq_exits: int = 0             # KVM_EXIT_IRQ_WINDOW_OPEN for userspace's request_interrupt_window
        self.signal_exits: int = 0
        self.pf_taken: int = 0
        self.pf_emulate: int = 0
        self.pf_fixed: int = 0
        self.invlpg: int = 0
        self.notify_window_exits: int = 0
        self.exits_by_reason: Counter = Counter()         # perf kvm stat's view
        self.emulation_by_type: Counter = Counter()       # bpftrace on x86_emulate_instruction
        self.injected_exceptions: list = []


class KvmVcpuArch:

    def __init__(self) -> None:
        self.complete_userspace_io: CompleteUserspaceIo | None = None
        self.pio: KvmPioRequest = KvmPioRequest()
        self.exception: KvmQueuedException = KvmQueuedException()
        self.nmi_queued: int = 0
        self.nmi_pending: int = 0
        self.nmi_injected: bool = False
        self.interrupt: KvmQueuedInterrupt = KvmQueuedInterrupt()
        self.halt_request: bool = False
        self.mp_state_halted: bool = False          # KVM_MP_STATE_HALTED (in-kernel LAPIC only)
        self.exit_qualification: int = 0
        self.emulate_ctxt: Any = None
        self.emulate_regs_need_sync_to_vcpu: bool = False
        self.emulate_regs_need_sync_from_vcpu: bool = False
        self.cpuid_entries: list[KvmCpuidEntry2] = []
        self.msrs: dict[int, int] = {}
        self.event_exit_inst_len: int = 0
        self.last_vmentry_cpu: int = 0
        self.cr8: int = 0                           # the TPR while the LAPIC is in userspace
        self.apic: Any = None                       # struct kvm_lapic (lapic.py) with KVM_CREATE_IRQCHIP, else None
        self.apic_dev: Any = None                   # its KVM_MMIO_BUS device (apic_mmio_ops)
        self.tsc_offset: int = 0                    # guest TSC - virtual clock (lapic.kvm_read_l1_tsc)
        self.slept_ns: int = 0                      # virtual time spent halted in the kernel (lapic.kvm_virtual_ns)
        self.userspace_trips: int = 0               # KVM_RUNs that resumed after an exit to userspace (ditto)
        self.apic_base: int = APIC_BASE_RESET       # MSR_IA32_APICBASE: default base, enabled, BSP
        self.cr0_guest_owned_bits: int = 0          # CR0/CR4 bits the guest writes without an exit
        self.cr4_guest_owned_bits: int = 0
        self.cr4_guest_rsvd_bits: int = 0           # CR4 bits the guest's CPUID does not allow
        self.db: list[int] = [0, 0, 0, 0]   # DR0-DR3
        self.dr6: int = 0xFFFF0FF0                  # DR6_ACTIVE_LOW (kvm_vcpu_reset)
        self.dr7: int = 0x400                       # DR7_FIXED_1
        self.emulation_required: bool = False       # vmx->emulation_required (vmx_guest_state.py)
        self.shadow_mmu: Any = None                 # mmu_shadow.ShadowMmu while enable_ept=0 (vcpu->arch.mmu)
        self.switch_db_regs: int = 0                # KVM_DEBUGREG_* (vmx.py: the lazy debug-register switch)
        self.ple_window: int = 0                    # vcpu_vmx->ple_window (grow_ple_window/shrink_ple_window)
        self.ple_window_dirty: bool = False         # ... to be written to the VMCS at the next entry
        self.eff_db: list[int] = [0, 0, 0, 0]   # DR0-3 in effect (guest's or the debugger's)
        self.guest_debug_dr7: int = 0               # KVM_SET_GUEST_DEBUG debugreg[7] with KVM_GUESTDBG_USE_HW_BP
        self.singlestep_rip: int = 0                # linear RIP where KVM_GUESTDBG_SINGLESTEP set RFLAGS.TF


class KvmVcpu:
    """struct kvm_vcpu: one vCPU of a VM, with its silicon and its kvm_run mapping."""

    def __init__(self, kvm: Kvm, vcpu_id: int) -> None:
        self.kvm = kvm
        self.vcpu_id = vcpu_id
        self.arch = KvmVcpuArch()
        self.stat = KvmVcpuStat()
        self.hw = SiliconVcpu()
        self.mapping = KvmRunMapping()
        self.run = self.mapping.run
        self.pio_data = memoryview(self.mapping.buf)[4096:8192]
        self.mmio_needed = False
        self.mmio_read_completed = False
        self.mmio_is_write = False
        self.mmio_cur_fragment = 0
        self.mmio_nr_fragments = 0
        # the kernel's fixed array: emulator_read_write_onepage fills the next slot, nr_fragments counts them
        self.mmio_fragments = [KvmMmioFragment(0, bytearray(), 0, 0) for _ in range(KVM_MAX_MMIO_FRAGMENTS)]
        self.wants_to_run = False
        self.requests: set[str] = set()
        self.signal_pending = False
        self.guest_debug = 0
        self.force_immediate_exit = False   # vcpu_enter_guest → vcpu_run: exit right after this entry's injection
        self.host_events: dict[int, list[HostEvent]] = {}   # VM-exit count -> host events due then (uapi.HostEvent)


class Kvm:
    """struct kvm: memslots, I/O buses, and the VM-wide settings."""

    def __init__(self, params: KvmParams | None = None) -> None:
        self.params = params or KvmParams()
        self.memslots: dict[int, tuple[int, int, memoryview]] = {}
        self.readonly_slots: set[int] = set()     # KVM_MEM_READONLY
        self.buses: dict[str, KvmIoBus] = {n: KvmIoBus(n) for n in
                                            ("KVM_MMIO_BUS", "KVM_PIO_BUS", "KVM_FAST_MMIO_BUS")}
        self.user_space_msr_mask = KvmMsrExitReason(0)
        self.vcpus: list[KvmVcpu] = []
        self.coalesced_zones: list[tuple[int, int, bool]] = []
        self.coalesced_ring = None
        self.irqchip = False                      # KVM_CREATE_IRQCHIP: an in-kernel LAPIC per vCPU (lapic.py)
        self.vpic: Any = None                     # ... and the PIC pair (i8259.py)
        self.vpit: Any = None                     # KVM_CREATE_PIT2 (i8254.py)
        self.irq_sources_bitmap = 1 << 0          # KVM_USERSPACE_IRQ_SOURCE_ID is always taken (irq_comm.py)
        self.irq_ack_notifier_list: list[Any] = []    # (gsi, callback): irq_comm.kvm_notify_acked_irq
        self.mask_notifier_list: list[Any] = []       # (irq, callback): irq_comm.kvm_fire_mask_notifiers
        self.dirty_log_slots: dict[int, bytearray] = {}   # KVM_MEM_LOG_DIRTY_PAGES slot -> dirty_bitmap
        self.manual_dirty_log_protect = 0             # KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 flags
