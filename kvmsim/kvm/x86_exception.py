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


# exception_type: the class of an exception vector, as x86.c sorts them (SDM table 6-1, with every
# #DB a trap: instruction breakpoints are not KVM's to queue).
EXCPT_FAULT, EXCPT_TRAP, EXCPT_ABORT, EXCPT_INTERRUPT = 0, 1, 2, 3
_TRAP_VECTORS = frozenset({Vector.DB, Vector.BP, Vector.OF})
_ABORT_VECTORS = frozenset({Vector.DF, Vector.MC})


def exception_type(vector: int) -> int:
    """Fault, trap or abort (an NMI or a vector above 31 is no exception: EXCPT_INTERRUPT)."""
    if vector > 31 or vector == Vector.NMI:
        return EXCPT_INTERRUPT
    if vector in _TRAP_VECTORS:
        return EXCPT_TRAP
    if vector in _ABORT_VECTORS:
        return EXCPT_ABORT
    return EXCPT_FAULT                 # reserved vectors included


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


DR_TRAP_BITS = 0xF
DR6_ACTIVE_LOW = 0xFFFF0FF0
DR6_BUS_LOCK = 1 << 11


def kvm_deliver_exception_payload(vcpu: KvmVcpu) -> None:
    """The payload lands where the CPU would have put it: #DB's in DR6 (B0-B3 replaced, the other
    bits ORed in, active-low bits as the payload flips them), #PF's in CR2."""
    exc = vcpu.arch.exception
    if not exc.has_payload:
        return
    if exc.vector == Vector.DB:
        arch = vcpu.arch
        dr6 = (arch.dr6 & ~DR_TRAP_BITS) | DR6_ACTIVE_LOW | exc.payload
        dr6 ^= exc.payload & DR6_ACTIVE_LOW
        arch.dr6 = dr6 & ~(1 << 12)                     # bit 12 reads 0 (no SMM #DB)
    elif exc.vector == Vector.PF:
        vcpu.hw.set_cr2(exc.payload)
    exc.has_payload, exc.payload = False, 0


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
