# Cython (compiled path only): annotated vcpu arguments are struct kvm_vcpu's extension type (vcpu.pxd).
from kvmsim.kvm.vcpu cimport KvmVcpu
