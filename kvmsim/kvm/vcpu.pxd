# Cython's view of vcpu.py (augmenting .pxd, compiled path only): struct kvm, struct kvm_vcpu, its
# arch part and its statistics as extension types whose fields are struct members for compiled
# callers (every field a Python object); __dict__ keeps attributes others attach.
from kvmsim.hw.registers cimport CpuState
from kvmsim.kvm.emulate.ctxt cimport X86EmulateCtxt

cdef class KvmVcpuStat:
    cdef dict __dict__
    cdef public object exits, io_exits, mmio_exits, halt_exits, nmi_window_exits, irq_window_exits
    cdef public object irq_exits, nmi_injections, irq_injections, insn_emulation
    cdef public object insn_emulation_fail, hypercalls, request_irq_exits, signal_exits, pf_taken
    cdef public object pf_emulate, pf_fixed, invlpg, notify_window_exits, exits_by_reason
    cdef public object emulation_by_type, injected_exceptions

cdef class KvmVcpuArch:
    cdef dict __dict__
    cdef public X86EmulateCtxt emulate_ctxt
    cdef public object complete_userspace_io, pio, exception, nmi_queued, nmi_pending, nmi_injected
    cdef public object interrupt, halt_request, mp_state_halted, exit_qualification
    cdef public object emulate_regs_need_sync_to_vcpu, emulate_regs_need_sync_from_vcpu
    cdef public object cpuid_entries, msrs, event_exit_inst_len, last_vmentry_cpu, cr8, apic
    cdef public object apic_dev, tsc_offset, slept_ns, userspace_trips, apic_base
    cdef public object cr0_guest_owned_bits, cr4_guest_owned_bits, cr4_guest_rsvd_bits, db, dr6, dr7
    cdef public object emulation_required, shadow_mmu, switch_db_regs, ple_window, ple_window_dirty
    cdef public object eff_db, guest_debug_dr7, singlestep_rip

cdef class Kvm:
    cdef dict __dict__
    cdef public object params, memslots, readonly_slots, buses, user_space_msr_mask, vcpus
    cdef public object coalesced_zones, coalesced_ring, irqchip, vpic, vpit, irq_sources_bitmap
    cdef public object irq_ack_notifier_list, mask_notifier_list, dirty_log_slots
    cdef public object manual_dirty_log_protect

cdef class KvmVcpu:
    cdef dict __dict__
    cdef public CpuState hw
    cdef public Kvm kvm
    cdef public KvmVcpuArch arch
    cdef public KvmVcpuStat stat
    cdef public object vcpu_id, mapping, run, pio_data, mmio_needed, mmio_read_completed
    cdef public object mmio_is_write, mmio_cur_fragment, mmio_nr_fragments, mmio_fragments
    cdef public object wants_to_run, requests, signal_pending, guest_debug, force_immediate_exit
    cdef public object host_events
