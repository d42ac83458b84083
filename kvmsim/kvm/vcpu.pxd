# Cython's view of vcpu.py (augmenting .pxd): struct kvm_vcpu as an extension type whose known
# fields are struct members for compiled callers; __dict__ keeps attributes others attach.
from kvmsim.hw.registers cimport CpuState

cdef class KvmVcpu:
    cdef dict __dict__
    cdef public CpuState hw
    cdef public object kvm, vcpu_id, arch, stat, mapping, run, pio_data
    cdef public object mmio_needed, mmio_read_completed, mmio_is_write, mmio_cur_fragment
    cdef public object mmio_nr_fragments, mmio_fragments, wants_to_run, requests, signal_pending
    cdef public object guest_debug, force_immediate_exit, host_events
