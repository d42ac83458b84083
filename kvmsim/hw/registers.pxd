# Cython (compiled path only): CpuState as the extension-type base of SiliconVcpu.  Its register
# cache and mode fields, and the silicon's per-entry fields that enter_guest reads on every VM
# entry (cpu.py), are struct members (each a Python object); registers.py/cpu.py stay the source.
from kvmsim.hw.vmcs cimport Vmcs

cdef class CpuState:
    cdef public dict _rc, _dirty, _exits, _walk_memo, _lengths   # always dicts: get/pop/clear on them are C calls
    cdef public object _env, uc, _mode, _mode_key, _efer, _uch, _mode_stale, _hflags_dirty
    cdef public object _regbuf, _regbuf_ref, _hflags, _wbuf, _wbuf_ref, _ss_flags
    cdef public object _snap_view, _snap_ptrs, _snap_ids, entry_checks_due
    # cpu.py's SiliconVcpu: what a VM entry and exit read and write
    cdef public Vmcs vmcs
    cdef public object guest_insns, insn_limit, host_nmi_every, host_timer_deadline, kick_pending
    cdef public object _pending, _rf_armed, _rescan, _begin, _counter, _counting, _between
    cdef public object _exit_count, _sweep_at, _sweep_insns_at, written_rflags, exception_bitmap
    cdef public object _xlate_key, _controls_key, _ro_segs, _pml_overflow, _cr2_at_entry, db_held
    cdef public object _bp_exec, _bp_movss, _dbg_on, _dbg_step, _dbg_addrs, _dbg_reported, data_bps
    cdef public object ept_mmio_gfns, stall_cycles
    # memory.py's GuestMemory: the memslot lookup and the page walk's caches
    cdef public object _slot_list, _last_slot, _pt_tables, _pt_tables_for
    cdef public object readonly_slots, spt_write_protected
    # the register cache's accessors, called on every exit: C calls for compiled callers of a typed `hw`
    cpdef reg(self, str name)
    cpdef flush_regs(self)
    cpdef _snapshot(self)
    cpdef mode(self)
    cpdef cpl(self)
    cpdef linear_rip(self)
