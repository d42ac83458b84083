"""kvmsim: a runnable model of Linux KVM's VMX exit handling (README.md).

The Python API for VMM authors (kvmsim/api.py) is re-exported here: `from kvmsim import Kvm, Io, Hlt`.
"""

from kvmsim.api import (BACKENDS, Debug, Exception_, FailEntry, Hlt, InternalError, Intr, Io, IoDirection, IrqWindowOpen, Kvm,
                        Mmio, Other, Shutdown, Vcpu, VcpuExit, Vm, X86Rdmsr, X86Wrmsr)
from kvmsim.uapi import KvmCpuidEntry2, KvmRegs, KvmSregs, KvmVcpuEvents

__version__ = "0.1.0"

__all__ = ["BACKENDS", "Debug", "Exception_", "FailEntry", "Hlt", "InternalError", "Intr", "Io", "IoDirection", "IrqWindowOpen", "Kvm",
           "KvmCpuidEntry2", "KvmVcpuEvents", "KvmRegs", "KvmSregs", "Mmio", "Other", "Shutdown", "Vcpu", "VcpuExit", "Vm",
           "X86Rdmsr", "X86Wrmsr"]
