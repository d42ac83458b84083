# Cython (compiled path only): annotated ctxt arguments are the extension types of ctxt.pxd.
from kvmsim.kvm.emulate.ctxt cimport X86EmulateCtxt, Operand
from kvmsim.hw.registers cimport CpuState

cdef class VcpuEmulateOps:
    cdef dict __dict__
    cdef public object vcpu, run_mmio, run_mmio_data
    cdef public dict _slot_views
    cdef public CpuState hw
from kvmsim.kvm.vcpu cimport KvmVcpu
