"""Model of arch/x86/kvm.  vmx.py is loaded first: its exit-handler table names functions from
x86.py, pio.py, msr.py, cpuid.py, hypercall.py and mmu.py, which call back into vmx (kvm_x86_ops)."""

from kvmsim.kvm import vmx as _vmx  # noqa: F401
