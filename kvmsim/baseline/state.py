"""A kvm-backend machine's boot state as a file the C VMM loads (cvmm.c's STATE_FILE).

Layout (little-endian): b"KVMSIMB1", u32 slot count, u32 0; per slot u64 GPA, u64 size, the
slot's bytes; then struct kvm_regs and struct kvm_sregs exactly as KVM_GET_REGS/SREGS gave them.
"""

from __future__ import annotations

import struct
from pathlib import Path

from kvmsim.scenario.runner import Machine

MAGIC = b"KVMSIMB1"


def write_state(m: Machine, path: Path, rcx: int) -> None:
    """Dump `m`'s RAM and registers with RCX = `rcx` (the bench loops take their count from RCX)."""
    regs = m.vcpu.get_regs()
    regs.rcx = rcx
    sregs = m.vcpu.get_sregs()
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<II", len(m.ram), 0))
        for gpa, buf in m.ram:
            f.write(struct.pack("<QQ", gpa, len(buf)))
            f.write(buf[:])
        f.write(bytes(regs))
        f.write(bytes(sregs))
