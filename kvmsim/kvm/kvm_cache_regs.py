"""Model of arch/x86/kvm/kvm_cache_regs.h and x86.h's register helpers: kvm_rip_read/write,
kvm_register_read/write, is_64_bit_mode, and x86.c's kvm_get_linear_rip.

The lowest x86-side module: every handler reads and writes guest registers through it,
vendor and x86.c alike.  (The register cache itself is the silicon's, hw/registers.py.)
"""

from __future__ import annotations

from kvmsim.kvm.vcpu import KvmVcpu

EFLAGS_TF, EFLAGS_IF, EFLAGS_RF = 1 << 8, 1 << 9, 1 << 16


def kvm_rip_read(vcpu: KvmVcpu) -> int:
    return vcpu.hw.reg("rip")


def kvm_rip_write(vcpu: KvmVcpu, rip: int) -> None:
    vcpu.hw.set_reg("rip", rip)


def kvm_register_read(vcpu: KvmVcpu, name: str) -> int:
    """A GPR as an instruction operand: only the low 32 bits outside 64-bit mode."""
    val = vcpu.hw.reg(name)
    return val if is_64_bit_mode(vcpu) else val & 0xFFFF_FFFF


def kvm_register_write(vcpu: KvmVcpu, name: str, value: int) -> None:
    vcpu.hw.set_reg(name, value if is_64_bit_mode(vcpu) else value & 0xFFFF_FFFF)


def is_64_bit_mode(vcpu: KvmVcpu) -> bool:
    return vcpu.hw.mode() == "long64"


def kvm_get_linear_rip(vcpu: KvmVcpu) -> int:
    return vcpu.hw.linear_rip()
