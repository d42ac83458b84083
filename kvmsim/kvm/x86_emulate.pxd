# Cython (compiled path only): annotated ctxt arguments are the extension types of ctxt.pxd.
from kvmsim.kvm.emulate.ctxt cimport X86EmulateCtxt, Operand
from kvmsim.kvm.vcpu cimport KvmVcpu
