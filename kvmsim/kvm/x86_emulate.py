"""Model of the emulation entry of arch/x86/kvm/x86.c: x86_emulate_instruction and its completions.

    x86_emulate_instruction(type)
      ├─ decode (unless NO_DECODE) ─ fail → #UD (TRAP_UD*) or handle_emulation_failure
      ├─ SKIP → RIP = next, done
      └─ restart: x86_emulate_insn
            ├─ exception → inject, resume
            ├─ pio.count → OUT: writeback, exit │ IN: no writeback, cui = complete_emulated_pio
            ├─ mmio_needed → read: no writeback │ write: writeback; cui = complete_emulated_mmio
            ├─ RESTART → loop (next REP chunk)  └─ else writeback, resume
"""

from __future__ import annotations

from kvmsim.errors import KvmSimBug
from kvmsim.hw.vmcs import GUEST_INTR_STATE_MOV_SS, GUEST_INTR_STATE_STI, Vector
from kvmsim.kvm import mmu_shadow, x86
from kvmsim.kvm.emulate.codes import KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI
from kvmsim.kvm.emulate.codes import EMULTYPE_ALLOW_RETRY_PF, EMULTYPE_WRITE_PF_TO_SP
from kvmsim.kvm.emulate.flags import PageTable
from kvmsim.kvm.emulate.codes import (EMULATION_FAILED, EMULATION_INTERCEPTED, EMULATION_OK, EMULATION_RESTART,
                                      EMULTYPE_COMPLETE_USER_EXIT, EMULTYPE_NO_DECODE, EMULTYPE_PF, EMULTYPE_SKIP,
                                      EMULTYPE_TRAP_UD, EMULTYPE_TRAP_UD_FORCED, EMULTYPE_VMWARE_GP,
                                      X86EMUL_MODE_PROT16, X86EMUL_MODE_PROT32, X86EMUL_MODE_PROT64,
                                      X86EMUL_MODE_REAL, X86EMUL_MODE_VM86, EmulType)
from kvmsim.kvm.emulate.ctxt import EmulatorFeatures, X86EmulateCtxt, emulator_writeback_register_cache, \
    init_decode_cache, emulator_invalidate_register_cache
from kvmsim.kvm.emulate.decode import x86_decode_insn
from kvmsim.kvm.emulate.emulate import x86_emulate_insn
from kvmsim.kvm.emulate.task_switch import emulator_task_switch
from kvmsim.kvm.emulator_ops import VcpuEmulateOps, run_mmio
from kvmsim.kvm.kvm_cache_regs import EFLAGS_RF, EFLAGS_TF, kvm_rip_write
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_exception import (kvm_vcpu_do_singlestep, kvm_inject_page_fault, kvm_queue_exception, kvm_queue_exception_e,
                                      kvm_queue_exception_p)
from kvmsim.probe import PROBES, kfunc, tracepoint
from kvmsim.uapi import KvmExit, KvmInternalError

__all__ = ["EMULTYPE_NO_DECODE", "EMULTYPE_PF", "EMULTYPE_SKIP", "EMULTYPE_VMWARE_GP", "x86_emulate_instruction",
           "kvm_emulate_instruction", "handle_ud", "flush_emulator_regs"]

# Plain ints on the hot path: IntFlag arithmetic allocates an enum member per operation.
(EMULTYPE_NO_DECODE, EMULTYPE_TRAP_UD, EMULTYPE_SKIP, EMULTYPE_TRAP_UD_FORCED, EMULTYPE_VMWARE_GP, EMULTYPE_PF,
 EMULTYPE_COMPLETE_USER_EXIT, EMULTYPE_ALLOW_RETRY_PF, EMULTYPE_WRITE_PF_TO_SP) = (
    int(f) for f in (EMULTYPE_NO_DECODE, EMULTYPE_TRAP_UD, EMULTYPE_SKIP, EMULTYPE_TRAP_UD_FORCED, EMULTYPE_VMWARE_GP,
                     EMULTYPE_PF, EMULTYPE_COMPLETE_USER_EXIT, EMULTYPE_ALLOW_RETRY_PF, EMULTYPE_WRITE_PF_TO_SP))
_KVM_EXIT_MMIO = int(KvmExit.MMIO)
KVM_EMULATE_PREFIX = bytes([0x0F, 0x0B, 0x6B, 0x76, 0x6D])   # ud2; "kvm"
_MODES = {"real": X86EMUL_MODE_REAL, "vm86": X86EMUL_MODE_VM86, "prot16": X86EMUL_MODE_PROT16,
          "prot32": X86EMUL_MODE_PROT32, "compat": X86EMUL_MODE_PROT32, "long64": X86EMUL_MODE_PROT64}
_MODE_NAMES = {X86EMUL_MODE_REAL: "real", X86EMUL_MODE_VM86: "vm16", X86EMUL_MODE_PROT16: "prot16",
               X86EMUL_MODE_PROT32: "prot32", X86EMUL_MODE_PROT64: "prot64"}
# Opcodes the VMware backdoor may use (IN/OUT/INS/OUTS, RDPMC).
_BACKDOOR_ONE_BYTE = frozenset({0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F})


def emulate_ctxt(vcpu: KvmVcpu) -> X86EmulateCtxt:
    """vcpu->arch.emulate_ctxt, created with the vCPU in the kernel (lazily here)."""
    ctxt = vcpu.arch.emulate_ctxt
    if ctxt is None:
        feats = vcpu.kvm.params.emulator
        ctxt = X86EmulateCtxt(VcpuEmulateOps(vcpu), vcpu, EmulatorFeatures(
            vex_moves=bool(feats.get("vex_moves", False)),
            enable_vmware_backdoor=vcpu.kvm.params.enable_vmware_backdoor))
        vcpu.arch.emulate_ctxt = ctxt
    return ctxt


def init_emulate_ctxt(vcpu: KvmVcpu) -> X86EmulateCtxt:
    ctxt = vcpu.arch.emulate_ctxt
    if ctxt is None:
        ctxt = emulate_ctxt(vcpu)
    hw = vcpu.hw
    rc = hw._rc      # hw.reg's cached values, looked up in place (registers.py); hw.reg on a miss
    eflags = rc.get("rflags")
    ctxt.eflags = eflags = hw.reg("rflags") if eflags is None else eflags
    ctxt.tf = (eflags & EFLAGS_TF) != 0
    eip = rc.get("rip")
    ctxt.eip = hw.reg("rip") if eip is None else eip
    mode = hw._mode  # hw.mode(), its fast path: the cached mode while nothing made it stale
    ctxt.mode = _MODES[hw.mode() if mode is None or hw._mode_stale else mode]
    ctxt.interruptibility = 0
    ctxt.have_exception = False
    exc = ctxt.exception
    exc.vector = -1
    exc.error_code_valid = False
    ctxt.perm_ok = False
    init_decode_cache(ctxt)
    vcpu.arch.emulate_regs_need_sync_from_vcpu = False
    return ctxt


def flush_emulator_regs(vcpu: KvmVcpu) -> None:
    """KVM_GET_REGS: commit registers the emulator still holds (writeback was deferred)."""
    if vcpu.arch.emulate_regs_need_sync_to_vcpu:
        emulator_writeback_register_cache(vcpu.arch.emulate_ctxt)
        vcpu.arch.emulate_regs_need_sync_to_vcpu = False


def _trace_emulate_insn(vcpu: KvmVcpu, ctxt: X86EmulateCtxt, failed: bool) -> None:
    n = ctxt.fetch.ptr   # the decoded length, as trace.h takes it (fetch.ptr - fetch.data), not the prefetch
    insn = bytes(ctxt.fetch.data[:n])
    csbase = vcpu.hw.seg_base("cs") & 0xFFFF_FFFF
    tracepoint("kvm_emulate_insn", rip=ctxt._eip - n, csbase=csbase, len=n, insn=insn.hex(),
               flags=_MODE_NAMES[ctxt.mode], failed=failed)


@kfunc("emulation_type")
def x86_emulate_instruction(vcpu: KvmVcpu, cr2_or_gpa: int, emulation_type: int,
                            insn: bytes | None = None, insn_len: int = 0) -> int:
    """Reference §6.3, steps numbered there."""
    if emulation_type.__class__ is not int:
        emulation_type = int(emulation_type)
    vcpu.stat.emulation_by_type[emulation_type] += 1
    arch = vcpu.arch
    ctxt = arch.emulate_ctxt
    if ctxt is None:
        ctxt = emulate_ctxt(vcpu)
    writeback = True
    if not emulation_type & EMULTYPE_NO_DECODE:                                           # 3
        arch.exception.pending = False  # kvm_clear_exception_queue
        ctxt = init_emulate_ctxt(vcpu)
        r = x86_decode_insn(ctxt, insn, insn_len, emulation_type)
        if PROBES.enabled:
            _trace_emulate_insn(vcpu, ctxt, False)
        vcpu.stat.insn_emulation += 1
        if r != EMULATION_OK:
            if emulation_type & (EMULTYPE_TRAP_UD | EMULTYPE_TRAP_UD_FORCED):
                kvm_queue_exception(vcpu, Vector.UD)
                return 1
            if kvm_unprotect_and_retry_on_failure(vcpu, cr2_or_gpa, emulation_type):
                return 1
            if ctxt.have_exception and not emulation_type & EMULTYPE_SKIP:
                inject_emulated_exception(vcpu, ctxt)
                return 1
            return handle_emulation_failure(vcpu, emulation_type)
    if emulation_type & EMULTYPE_VMWARE_GP and not _is_vmware_backdoor_opcode(ctxt):      # 4
        kvm_queue_exception_e(vcpu, Vector.GP, 0)
        return 1
    if emulation_type & EMULTYPE_SKIP:                                                    # 5
        ctxt.eip = ctxt._eip if ctxt.mode == X86EMUL_MODE_PROT64 else ctxt._eip & 0xFFFF_FFFF
        if emulation_type & EMULTYPE_COMPLETE_USER_EXIT:
            return _writeback(vcpu, ctxt, 1)
        kvm_rip_write(vcpu, ctxt.eip)
        if ctxt.eflags & EFLAGS_RF:
            vcpu.hw.set_reg("rflags", vcpu.hw.reg("rflags") & ~EFLAGS_RF)
        return 1
    # 6: a write-protection #PF from an instruction that does not write page tables: unprotect the
    # gfn and let the guest run it again (the guest has likely stopped using the page as a table).
    if (emulation_type & EMULTYPE_ALLOW_RETRY_PF and not ctxt.d & PageTable
            and mmu_shadow.kvm_mmu_unprotect_gfn_and_retry(vcpu, cr2_or_gpa)):
        return 1
    if arch.emulate_regs_need_sync_from_vcpu:                                             # 7
        arch.emulate_regs_need_sync_from_vcpu = False
        emulator_invalidate_register_cache(ctxt)
    restarts = 0
    exc = ctxt.exception
    while True:                                                                           # 8: restart
        if emulation_type & EMULTYPE_PF:
            exc.address = cr2_or_gpa
            # TDP: the fault address is the GPA; with shadow page tables it is a GVA.
            ctxt.gpa_available = vcpu.kvm.params.enable_ept or not mmu_shadow.is_shadow_mmu(vcpu)
            ctxt.gpa_val = cr2_or_gpa
        else:
            exc.address = 0
            ctxt.gpa_available = False
        r = x86_emulate_insn(ctxt)                                                        # 9
        if r == EMULATION_INTERCEPTED:                                                    # 10
            return 1
        if r == EMULATION_FAILED:
            if kvm_unprotect_and_retry_on_failure(vcpu, cr2_or_gpa, emulation_type):
                return 1
            return handle_emulation_failure(vcpu, emulation_type)
        if ctxt.have_exception:                                                           # 11
            vcpu.mmio_needed = False
            r = 1
            inject_emulated_exception(vcpu, ctxt)
        elif arch.pio.count:
            if not arch.pio.is_in:
                arch.pio.count = 0   # OUT: already retired, nothing to complete
            else:
                writeback = False
                arch.complete_userspace_io = complete_emulated_pio
            r = 0
        elif vcpu.mmio_needed:
            vcpu.stat.mmio_exits += 1
            if not vcpu.mmio_is_write:
                writeback = False
            r = 0
            arch.complete_userspace_io = complete_emulated_mmio
        elif arch.complete_userspace_io is not None:
            writeback = False
            r = 0
        elif r == EMULATION_RESTART:
            restarts += 1
            if restarts > 1024:  # emulate.c restarts only while RCX[9:0] != 0: more is our bug
                raise KvmSimBug(f"emulator restarted {restarts} times at rip {ctxt.eip:#x} without "
                                "returning to the guest")
            continue
        else:
            r = 1
        break
    if writeback:
        return _writeback(vcpu, ctxt, r)
    arch.emulate_regs_need_sync_to_vcpu = True
    return r


def kvm_unprotect_and_retry_on_failure(vcpu: KvmVcpu, cr2_or_gpa: int, emulation_type: int) -> bool:
    """Emulation failed on a write-protection #PF: unprotect the gfn and let the CPU retry, unless
    the write went to a table that translates the instruction itself (EMULTYPE_WRITE_PF_TO_SP)."""
    if not emulation_type & EMULTYPE_ALLOW_RETRY_PF or emulation_type & EMULTYPE_WRITE_PF_TO_SP:
        return False
    return mmu_shadow.kvm_mmu_unprotect_gfn_and_retry(vcpu, cr2_or_gpa)


def _writeback(vcpu: KvmVcpu, ctxt: X86EmulateCtxt, r: int) -> int:
    """Step 12: RIP, single-step #DB, RFLAGS."""
    hw = vcpu.hw
    arch = vcpu.arch
    arch.emulate_regs_need_sync_to_vcpu = False
    if ctxt.interruptibility or hw.vmcs.guest_interruptibility_info & _SHADOW_BITS:
        toggle_interruptibility(vcpu, ctxt.interruptibility)
    if not ctxt.have_exception or _is_trap(ctxt.exception.vector):
        hw.retired()   # kvm_pmu_trigger_event(INSTRUCTIONS_RETIRED): the emulated instruction retires
        kvm_rip_write(vcpu, ctxt.eip)
        rflags = hw._rc.get("rflags")   # hw.reg("rflags"), its cached value looked up in place
        if rflags is None:
            rflags = hw.reg("rflags")
        eflags = ctxt.eflags
        if r and (ctxt.tf or rflags & EFLAGS_TF) and eflags & EFLAGS_TF:
            r = kvm_vcpu_do_singlestep(vcpu)
        if eflags != rflags:   # __kvm_set_rflags; rewriting the same value changes nothing
            hw.set_reg("rflags", eflags)
    if arch.halt_request and r:
        arch.halt_request = False
        return x86.__kvm_emulate_halt(vcpu)
    return r


_SHADOW_BITS = GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS


def toggle_interruptibility(vcpu: KvmVcpu, mask: int) -> None:
    """The emulated instruction's interrupt shadow (KVM_X86_SHADOW_INT_*) replaces the one before it;
    a second STI (or MOV SS) right after one opens none, and a shadow that ends asks KVM_REQ_EVENT."""
    v = vcpu.hw.vmcs
    cur = v.guest_interruptibility_info
    int_shadow = ((KVM_X86_SHADOW_INT_STI if cur & GUEST_INTR_STATE_STI else 0)         # get_interrupt_shadow
                  | (KVM_X86_SHADOW_INT_MOV_SS if cur & GUEST_INTR_STATE_MOV_SS else 0))
    if int_shadow & mask:
        mask = 0
    if int_shadow or mask:
        bits = (GUEST_INTR_STATE_MOV_SS if mask & KVM_X86_SHADOW_INT_MOV_SS           # set_interrupt_shadow
                else GUEST_INTR_STATE_STI if mask & KVM_X86_SHADOW_INT_STI else 0)
        v.guest_interruptibility_info = (cur & ~_SHADOW_BITS) | bits
        if not mask:
            vcpu.requests.add("KVM_REQ_EVENT")


def _is_trap(vector: int) -> bool:
    return vector in (Vector.BP, Vector.OF)


def _is_vmware_backdoor_opcode(ctxt: X86EmulateCtxt) -> bool:
    if ctxt.opcode_len == 1:
        return ctxt.b in _BACKDOOR_ONE_BYTE
    return ctxt.opcode_len == 2 and ctxt.b == 0x33


def inject_emulated_exception(vcpu: KvmVcpu, ctxt: X86EmulateCtxt) -> None:
    ex = ctxt.exception
    if ex.vector == Vector.PF:
        kvm_inject_page_fault(vcpu, ex.address, ex.error_code)
    elif ex.error_code_valid:
        kvm_queue_exception_e(vcpu, ex.vector, ex.error_code)
    else:
        kvm_queue_exception(vcpu, ex.vector)


@kfunc("emulation_type")
def handle_emulation_failure(vcpu: KvmVcpu, emulation_type: int) -> int:
    """Reference §6.4: exit with the instruction bytes, and/or #UD for the guest."""
    ctxt = emulate_ctxt(vcpu)
    vcpu.stat.insn_emulation_fail += 1
    if PROBES.enabled:
        _trace_emulate_insn(vcpu, ctxt, True)
    if emulation_type & EMULTYPE_VMWARE_GP:
        kvm_queue_exception_e(vcpu, Vector.GP, 0)
        return 1
    insn_bytes = bytes(ctxt.fetch.data[:ctxt.fetch.end])
    if vcpu.kvm.params.exit_on_emulation_error or emulation_type & EMULTYPE_SKIP:
        x86.kvm_prepare_emulation_failure_exit(vcpu, insn_bytes=insn_bytes)
        return 0
    kvm_queue_exception(vcpu, Vector.UD)
    if vcpu.hw.cpl() == 0:
        x86.kvm_prepare_emulation_failure_exit(vcpu, insn_bytes=insn_bytes)
        return 0
    return 1


@kfunc("emulation_type")
def kvm_emulate_instruction(vcpu: KvmVcpu, emulation_type: int) -> int:
    """Fetch the instruction at CS:RIP and emulate it."""
    return x86_emulate_instruction(vcpu, 0, emulation_type, None, 0)


def kvm_emulate_instruction_from_buffer(vcpu: KvmVcpu, insn: bytes, insn_len: int) -> int:
    return x86_emulate_instruction(vcpu, 0, 0, insn, insn_len)


@kfunc()
def handle_ud(vcpu: KvmVcpu) -> int:
    """#UD intercept: the forced-emulation prefix, else emulate only EmulateOnUD opcodes."""
    emul_type = EMULTYPE_TRAP_UD
    if vcpu.kvm.params.force_emulation_prefix:
        try:
            sig = vcpu.hw.read_linear_bytes(vcpu.hw.linear_rip(), 5)
        except Exception:   # the fetch faulted: no prefix there
            sig = b""
        if sig == KVM_EMULATE_PREFIX:
            kvm_rip_write(vcpu, vcpu.hw.reg("rip") + 5)
            emul_type = EMULTYPE_TRAP_UD_FORCED
    return kvm_emulate_instruction(vcpu, emul_type)


# ---------------------------------------------------------------- completions

@kfunc()
def complete_emulated_pio(vcpu: KvmVcpu) -> int:
    if not vcpu.arch.pio.count:
        raise KvmSimBug("complete_emulated_pio without a pending pio")
    return kvm_emulate_instruction(vcpu, EMULTYPE_NO_DECODE)


@kfunc()
def complete_emulated_mmio(vcpu: KvmVcpu) -> int:
    """Reference §7.4: one ≤8-byte piece per exit; the last read re-enters with NO_DECODE.

        copy data in (read) ─► more of this fragment? ─► next exit
                            └► next fragment? ─► next exit
                            └► all done: write → resume │ read → NO_DECODE
    """
    if not vcpu.mmio_needed:
        raise KvmSimBug("complete_emulated_mmio without mmio_needed")
    run = vcpu.run
    mmio, mmio_data = run_mmio(vcpu)
    is_write = vcpu.mmio_is_write
    frag = vcpu.mmio_fragments[vcpu.mmio_cur_fragment]
    flen = frag.len
    length = 8 if flen > 8 else flen
    if not is_write:
        off = frag.offset
        frag.data[off:off + length] = mmio_data[:length]
    if flen <= 8:
        vcpu.mmio_cur_fragment += 1
    else:
        frag.offset += length
        frag.gpa += length
        frag.len = flen - length
    if vcpu.mmio_cur_fragment >= vcpu.mmio_nr_fragments:
        vcpu.mmio_needed = False
        if is_write:
            return 1
        vcpu.mmio_read_completed = True
        return kvm_emulate_instruction(vcpu, EMULTYPE_NO_DECODE)
    frag = vcpu.mmio_fragments[vcpu.mmio_cur_fragment]
    run.exit_reason = _KVM_EXIT_MMIO
    mmio.phys_addr = frag.gpa
    n = min(8, frag.len)
    if is_write:
        data = mmio.data
        for i, b in enumerate(frag.data[frag.offset:frag.offset + n]):
            data[i] = b
    mmio.len = n
    mmio.is_write = int(is_write)
    vcpu.arch.complete_userspace_io = complete_emulated_mmio
    return 0


def emultype_name(t: int) -> str:
    return "0" if t == 0 else "|".join(f.name for f in EmulType if f & t)


# ---------------------------------------------------------------- task switch

@kfunc()
def kvm_task_switch(vcpu: KvmVcpu, tss_selector: int, idt_index: int, reason: int,
                    has_error_code: bool, error_code: int) -> int:
    """The task switch the CPU exited on, done by the emulator; then RIP and RFLAGS of the new task.
    Emulation failure, or MMIO during it, is KVM_EXIT_INTERNAL_ERROR (EMULATION, no data); a fault
    the emulator raised is dropped, as the kernel drops it (simplified: no CET checks)."""
    ctxt = init_emulate_ctxt(vcpu)
    ret = emulator_task_switch(ctxt, tss_selector, idt_index, reason, has_error_code, error_code)
    if ret or vcpu.mmio_needed:
        vcpu.mmio_needed = False
        run = vcpu.run
        run.exit_reason = KvmExit.INTERNAL_ERROR
        run.internal.suberror = KvmInternalError.EMULATION
        run.internal.ndata = 0
        return 0
    kvm_rip_write(vcpu, ctxt.eip)
    vcpu.hw.set_reg("rflags", ctxt.eflags)       # kvm_set_rflags
    vcpu.requests.add("KVM_REQ_EVENT")
    return 1
