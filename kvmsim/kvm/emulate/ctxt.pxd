# Cython's view of ctxt.py (augmenting .pxd): the hot structs as extension types, every field a
# Python object, so the compiled emulator reads them as struct members; ctxt.py stays the source.
cdef class Operand:
    cdef public object type, bytes, count, val, orig_val, reg, reg_shift, ea, seg, xmm, mm, data

cdef class ReadCache:
    cdef public object data, pos, end, view

cdef class FetchCache:
    cdef public object data, ptr, end, view

cdef class X86EmulateCtxt:
    cdef public object ops, vcpu, features, eflags, eip, mode, interruptibility
    cdef public object have_exception, exception, perm_ok, tf, gpa_available, gpa_val
    cdef public object opcode_len, b, intercept, op_bytes, ad_bytes, execute, check_perm
    cdef public object rip_relative, rex_prefix, lock_prefix, rep_prefix, regs_valid
    cdef public object regs_dirty, modrm, modrm_mod, modrm_reg, modrm_rm, modrm_seg
    cdef public object seg_override, d, _eip, is_branch, vex_l, vex
    cdef public Operand src, src2, dst, memop
    cdef public object memopp, _regs
    cdef public FetchCache fetch
    cdef public ReadCache io_read, mem_read
    cdef public object decode_cache
