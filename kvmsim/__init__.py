"""kvmsim: a runnable model of Linux KVM's VMX exit handling (README.md).

The Python API for VMM authors (kvmsim/api.py) is re-exported here: `from kvmsim import Kvm, Io, Hlt`.
The hot modules may run compiled (kvmsim/compiled/: built by `make`; KVMSIM_PURE=1 runs the source).
"""

from kvmsim.compiled.guard import install as _install_compiled_guard

_install_compiled_guard()   # before any kernel-model import: a stale compiled module must not shadow its source

# Below the guard's install, on purpose: the API imports the kernel model, some of it compiled.
from kvmsim.api import (BACKENDS, Debug, Exception_, FailEntry, Hlt, InternalError, Intr, Io, IoDirection, IrqWindowOpen, Kvm,
                        Mmio, Other, Shutdown, Vcpu, VcpuExit, Vm, X86Rdmsr, X86Wrmsr)
from kvmsim.uapi import KvmCpuidEntry2, KvmRegs, KvmSregs, KvmVcpuEvents   # (below the guard too)

__version__ = "0.1.0"

__all__ = ["BACKENDS", "Debug", "Exception_", "FailEntry", "Hlt", "InternalError", "Intr", "Io", "IoDirection", "IrqWindowOpen", "Kvm",
           "KvmCpuidEntry2", "KvmVcpuEvents", "KvmRegs", "KvmSregs", "Mmio", "Other", "Shutdown", "Vcpu", "VcpuExit", "Vm",
           "X86Rdmsr", "X86Wrmsr"]
