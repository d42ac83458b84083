# Cython (compiled path only): `cpu: CpuState` locals are the extension type of registers.pxd.
from kvmsim.hw.registers cimport CpuState
