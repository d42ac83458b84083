"""Model of arch/x86/kvm/x86.c exception queueing and instruction completion: kvm_multiple_exception,
kvm_queue_exception*, kvm_inject_page_fault/gp, kvm_complete_insn_gp, kvm_skip_emulated_instruction.

Every exit handler ends in one of these (skip the instruction, or fault it), on both sides
of kvm_x86_ops: so they sit below x86.py, cpuid.py, cr.py and the rest, and reach the
vendor's skip through kvm_x86_ops.
"""

from __future__ import annotations

from kvmsim.hw.vmcs import Vector
from kvmsim.kvm.kvm_cache_regs import EFLAGS_TF
from kvmsim.uapi import KvmExit
from kvmsim.kvm.kvm_x86_ops import kvm_x86_ops
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.probe import kfunc


def kvm_multiple_exception(vcpu: KvmVcpu, nr: int, has_error: bool, error_code: int,
                           has_payload: bool = False, payload: int = 0) -> None:
    """Queue an exception; a second one while one is queued becomes #DF, a third a triple fault."""
    exc = vcpu.arch.exception
    if exc.pending or exc.injected:
        prev = exc.vector
        if prev == Vector.DF:
            vcpu.requests.add("KVM_REQ_TRIPLE_FAULT")
            return
        contributory = {Vector.DE, Vector.TS, Vector.NP, Vector.SS, Vector.GP}
        if (prev in contributory and nr in contributory) or (prev == Vector.PF and (nr in contributory or nr == Vector.PF)):
            nr, has_error, error_code, has_payload = Vector.DF, True, 0, False
    exc.pending, exc.injected = True, False
    vcpu.requests.add("KVM_REQ_EVENT")
    exc.vector, exc.has_error_code, exc.error_code = nr, has_error, error_code
    exc.has_payload, exc.payload = has_payload, payload


@kfunc("nr")
def kvm_queue_exception(vcpu: KvmVcpu, nr: int) -> None:
    kvm_multiple_exception(vcpu, nr, False, 0)


@kfunc("nr", "error_code")
def kvm_queue_exception_e(vcpu: KvmVcpu, nr: int, error_code: int) -> None:
    kvm_multiple_exception(vcpu, nr, True, error_code)


def kvm_queue_exception_p(vcpu: KvmVcpu, nr: int, payload: int) -> None:
    kvm_multiple_exception(vcpu, nr, False, 0, True, payload)


@kfunc("address", "error_code")
def kvm_inject_page_fault(vcpu: KvmVcpu, address: int, error_code: int) -> None:
    """#PF with CR2 as payload: CR2 is written when the exception is delivered."""
    kvm_multiple_exception(vcpu, Vector.PF, True, error_code & 0xFFFF_FFFF, True, address)


def kvm_inject_gp(vcpu: KvmVcpu, error_code: int = 0) -> None:
    kvm_queue_exception_e(vcpu, Vector.GP, error_code)


def kvm_complete_insn_gp(vcpu: KvmVcpu, err: int) -> int:
    """err → #GP(0) and resume; else skip the instruction."""
    if err:
        kvm_inject_gp(vcpu, 0)
        return 1
    return kvm_skip_emulated_instruction(vcpu)


@kfunc()
def kvm_skip_emulated_instruction(vcpu: KvmVcpu) -> int:
    """Vendor skip, then a single-step #DB if TF was set before (reference §5)."""
    rflags = vcpu.hw.reg("rflags")
    r = kvm_x86_ops.skip_emulated_instruction(vcpu)
    if r == 0:
        return 0
    vcpu.hw.retired()   # kvm_pmu_instruction_retired: the skipped instruction retires in the guest
    if rflags & EFLAGS_TF:
        r = kvm_vcpu_do_singlestep(vcpu)
    return r


KVM_GUESTDBG_SINGLESTEP = 0x00000002
DR6_BS, DR6_ACTIVE_LOW = 1 << 14, 0xFFFF0FF0


def kvm_vcpu_do_singlestep(vcpu: KvmVcpu) -> int:
    """The trap after an instruction KVM completed with TF set: KVM_EXIT_DEBUG for a userspace
    debugger (run->debug.arch.dr7 is left as it was), else #DB with DR6.BS to the guest."""
    if vcpu.guest_debug & KVM_GUESTDBG_SINGLESTEP:
        run = vcpu.run
        run.debug.arch.dr6 = DR6_BS | DR6_ACTIVE_LOW
        run.debug.arch.pc = vcpu.hw.linear_rip()
        run.debug.arch.exception = Vector.DB
        run.exit_reason = KvmExit.DEBUG
        return 0
    kvm_queue_exception_p(vcpu, Vector.DB, DR6_BS)
    return 1
