"""Model of arch/x86/kvm/x86.c kvm_emulate_hypercall / __kvm_emulate_hypercall (KVM_HC_*)."""

from __future__ import annotations

from kvmsim.kvm.kvm_cache_regs import is_64_bit_mode
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_exception import kvm_skip_emulated_instruction
from kvmsim.probe import PROBES, kfunc, tracepoint
from kvmsim.uapi import KVM_ENOSYS, KVM_EPERM, KvmHc

# Hypercalls that need nothing but a return value here (no other vCPUs, no host clock).
_RET_ZERO = frozenset({KvmHc.VAPIC_POLL_IRQ, KvmHc.KICK_CPU, KvmHc.SCHED_YIELD, KvmHc.SEND_IPI})


@kfunc()
def kvm_emulate_hypercall(vcpu: KvmVcpu) -> int:
    """nr in RAX, a0..a3 in RBX, RCX, RDX, RSI; result in RAX; then skip the VMCALL."""
    hw = vcpu.hw
    op_64 = is_64_bit_mode(vcpu)
    mask = (1 << 64) - 1 if op_64 else 0xFFFF_FFFF
    nr = hw.reg("rax") & mask
    a = [hw.reg(r) & mask for r in ("rbx", "rcx", "rdx", "rsi")]
    if PROBES.enabled:
        tracepoint("kvm_hypercall", nr=nr, a0=a[0], a1=a[1], a2=a[2], a3=a[3],
                   text=f"nr 0x{nr:x} a0 0x{a[0]:x} a1 0x{a[1]:x} a2 0x{a[2]:x} a3 0x{a[3]:x}")
    if hw.cpl() != 0:
        ret = -KVM_EPERM
    elif nr in _RET_ZERO:
        # Simplified: one vCPU, so kick/yield/IPI have no target; KVM returns 0 (IPI: count 0).
        ret = 0
    else:
        ret = -KVM_ENOSYS
    if not op_64:
        ret &= 0xFFFF_FFFF
    hw.set_reg("rax", ret & ((1 << 64) - 1))
    vcpu.stat.hypercalls += 1
    return kvm_skip_emulated_instruction(vcpu)
