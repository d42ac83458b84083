# Cython (compiled path only): ctxt/operand arguments annotated in the .py are the extension types of ctxt.pxd.
from kvmsim.kvm.emulate.ctxt cimport X86EmulateCtxt, Operand
