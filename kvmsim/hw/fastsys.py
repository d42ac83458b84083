"""SYSCALL, SYSRET and SYSENTER as Intel silicon executes them (SDM vol. 2B), for hw/fixups.py.

unicorn (QEMU 5 TCG) differs: its SYSCALL and SYSENTER only call UC_HOOK_INSN hooks and step over
the instruction, and its SYSCALL/SYSRET follow AMD outside 64-bit mode.  On Intel:
* SYSCALL is #UD unless in 64-bit mode with EFER.SCE set; it loads CS/SS from IA32_STAR, RIP from
  IA32_LSTAR, saves RIP in RCX and RFLAGS in R11, and clears the IA32_FMASK bits of RFLAGS;
* SYSRET is #UD outside 64-bit mode, and a 64-bit SYSRET to a non-canonical RCX is #GP(0) in ring 0;
* SYSENTER works in every protected mode, 64-bit too: #GP(0) in real mode or with a null
  IA32_SYSENTER_CS; it loads flat ring-0 CS/SS, RIP/RSP from IA32_SYSENTER_EIP/ESP, clears VM, IF, RF.
The MSRs are the CPU's (KVM loads STAR/LSTAR/CSTAR/FMASK before VM entry; SYSENTER_* are passed
through).  A single-step trap follows when TF is still set at the end (SYSCALL: after FMASK).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_DR6

from kvmsim.hw import paging
from kvmsim.hw.vmcs import Vector
from kvmsim.uapi import KvmSegment

if TYPE_CHECKING:
    from kvmsim.hw.cpu import SiliconVcpu

MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_STAR, MSR_LSTAR, MSR_SYSCALL_MASK = 0xC0000081, 0xC0000082, 0xC0000084
EFER_SCE = 1 << 0
X86_EFLAGS_TF, X86_EFLAGS_IF, X86_EFLAGS_RF, X86_EFLAGS_VM = 1 << 8, 1 << 9, 1 << 16, 1 << 17
X86_EFLAGS_FIXED = 1 << 1
DR6_BS = 1 << 14
U64 = (1 << 64) - 1


def _flat_ring0(selector: int, long_mode: bool) -> tuple[KvmSegment, KvmSegment]:
    """The CS and SS caches SYSCALL/SYSENTER load: base 0, 4 GiB, DPL 0, CS execute/read, SS read/write."""
    cs = KvmSegment(base=0, limit=0xFFFF_FFFF, selector=selector & 0xFFFC, type=0xB, present=1, dpl=0,
                    db=0 if long_mode else 1, s=1, l=1 if long_mode else 0, g=1)
    ss = KvmSegment(base=0, limit=0xFFFF_FFFF, selector=((selector & 0xFFFC) + 8) & 0xFFFF, type=0x3,
                    present=1, dpl=0, db=1, s=1, l=0, g=1)
    return cs, ss


def _enter(cpu: "SiliconVcpu", cs: KvmSegment, ss: KvmSegment, rip: int, rflags: int) -> bool:
    """Load the new state; the instruction retires, then a single step traps if TF is set."""
    cpu.set_segment("cs", cs)
    cpu.set_segment("ss", ss)
    cpu.set_reg("rip", rip)
    cpu.set_reg("rflags", rflags | X86_EFLAGS_FIXED)
    cpu.retired()
    if rflags & X86_EFLAGS_TF:     # as QEMU's own single-step trap: DR6.BS, then #DB
        cpu.uc.reg_write(UC_X86_REG_DR6, cpu.uc.reg_read(UC_X86_REG_DR6) | DR6_BS)
        return cpu._exception(Vector.DB, None)
    return False


def run_syscall(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    if cpu.mode() != "long64" or not cpu.efer() & EFER_SCE:
        return cpu._exception(Vector.UD, None)
    rflags = cpu.reg("rflags")
    cpu.set_reg("rcx", (cpu.reg("rip") + length) & U64)
    cpu.set_reg("r11", rflags & ~X86_EFLAGS_RF)
    cs, ss = _flat_ring0(cpu.msr(MSR_STAR) >> 32, True)
    new_flags = rflags & ~cpu.msr(MSR_SYSCALL_MASK) & ~X86_EFLAGS_RF
    return _enter(cpu, cs, ss, cpu.msr(MSR_LSTAR), new_flags)


def run_sysret(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    """Only the Intel-specific refusals; a SYSRET Intel runs is unicorn's own."""
    if cpu.mode() != "long64" or not cpu.efer() & EFER_SCE:
        return cpu._exception(Vector.UD, None)
    if cpu.cpl() != 0:
        return cpu._exception(Vector.GP, 0)
    rex_w = length >= 3 and 0x48 <= code[length - 3] <= 0x4F      # REX.W right before 0F 07
    if rex_w and (cpu.reg("rcx") >> 47) not in (0, 0x1FFFF):
        return cpu._exception(Vector.GP, 0)
    return cpu._step_native(cpu.linear_rip())


def run_sysenter(cpu: "SiliconVcpu", code: bytes, length: int) -> bool:
    mode = cpu.mode()
    sel = cpu.msr(MSR_IA32_SYSENTER_CS) & 0xFFFF
    if mode == "real" or sel & 0xFFFC == 0:
        return cpu._exception(Vector.GP, 0)
    long_mode = bool(cpu.efer() & paging.EFER_LMA)
    eip, esp = cpu.msr(MSR_IA32_SYSENTER_EIP), cpu.msr(MSR_IA32_SYSENTER_ESP)
    if not long_mode:
        eip, esp = eip & 0xFFFF_FFFF, esp & 0xFFFF_FFFF
    cs, ss = _flat_ring0(sel, long_mode)
    cpu.set_reg("rsp", esp)
    rflags = cpu.reg("rflags") & ~(X86_EFLAGS_VM | X86_EFLAGS_IF | X86_EFLAGS_RF)
    return _enter(cpu, cs, ss, eip, rflags)
