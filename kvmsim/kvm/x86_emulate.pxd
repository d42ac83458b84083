# Cython (compiled path only): annotated vcpu/ctxt arguments are the extension types of vcpu.pxd/ctxt.pxd.
from kvmsim.kvm.emulate.ctxt cimport X86EmulateCtxt, Operand
from kvmsim.kvm.vcpu cimport KvmVcpu
