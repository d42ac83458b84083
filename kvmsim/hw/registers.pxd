# Cython (compiled path only): CpuState as the extension-type base of SiliconVcpu, its register
# cache and mode fields struct members (every one a Python object); registers.py stays the source.
cdef class CpuState:
    cdef public object _env, _rc, uc, _mode, _mode_key, _efer, _uch, _mode_stale, _hflags_dirty
    cdef public object _dirty, _regbuf, _regbuf_ref, _hflags, _wbuf, _wbuf_ref, _ss_flags
    cdef public object _snap_view, _snap_ptrs, _snap_ids, entry_checks_due
