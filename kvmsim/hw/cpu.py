"""The silicon: a unicorn-backed vCPU in VMX non-root mode that synthesizes VM exits.

The guest runs natively in unicorn.  Instructions that exit under KVM's controls stop the
CPU when it reaches them (trap.py), with RIP at the instruction, as a VM exit leaves it.  MMIO (no memslot) stops precisely through the unmapped-memory hook.
Hooks only record; the VM exit is built after `emu_start` returns (STYLE.md: nothing
crosses the unicorn boundary).  Registers live in registers.py, guest memory and the
page walk in memory.py; this module is VM entry, exit synthesis and event delivery.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

from capstone import CS_AC_WRITE, CS_ARCH_X86, CS_MODE_16, Cs
from capstone.x86_const import X86_OP_MEM, X86_REG_RIP
from unicorn import (UC_ARCH_X86, UC_HOOK_INTR, UC_HOOK_MEM_UNMAPPED, UC_HOOK_MEM_WRITE_PROT,
                     UC_MEM_FETCH_UNMAPPED, UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_PROT, UC_MEM_WRITE_UNMAPPED,
                     UC_MODE_64, Uc, UcError)
from unicorn import unicorn_const as UCC

from unicorn.unicorn_py3.unicorn import HOOK_MEM_INVALID_CFUNC, uc_hook_h, uclib
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC
from unicorn.x86_const import UC_X86_INS_RDTSC, UC_X86_INS_RDTSCP, UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX

from kvmsim.errors import KvmSimBug
from kvmsim.hw import ctrlregs, event, fixups, insn_info, paging, quirks, taskswitch
from kvmsim.hw.cpux86 import R_SS, env_of, live_u32
from kvmsim.hw.debugregs import DebugRegs
from kvmsim.hw.debugtrap import DebugTrap
from kvmsim.hw.exits import CONTROLLED, CPL0_FAULT, Action, cs_mode_of, decode_io, falls_through, insn_length
from kvmsim.hw.vmcs import (VMX_EXIT_REASONS_FAILED_VMENTRY, EPT_VIOLATION_ACC_INSTR, EPT_VIOLATION_ACC_READ, EPT_VIOLATION_ACC_WRITE,
                            EPT_VIOLATION_EXECUTABLE, EPT_VIOLATION_READABLE,
                            EPT_VIOLATION_GVA_IS_VALID, EPT_VIOLATION_GVA_TRANSLATED, EXCEPTIONS_WITH_ERROR_CODE, ExitReason,
                            CPU_BASED_NMI_WINDOW_EXITING, GUEST_INTR_STATE_NMI, NMI_HOST_INTR_INFO, IntrType,
                            IoExitQual, Vector, Vmcs, insn_exits, intr_info, pause_loop_exits,
                            CPU_BASED_INTR_WINDOW_EXITING, GUEST_INTR_STATE_MOV_SS, GUEST_INTR_STATE_STI,
                            SECONDARY_EXEC_ENABLE_EPT, SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES, TYPE_LINEAR_APIC_INST_FETCH,
                            TYPE_LINEAR_APIC_INST_READ, TYPE_LINEAR_APIC_INST_WRITE,
                            SECONDARY_EXEC_BUS_LOCK_DETECTION, invpcid_exits)
from kvmsim.hw.apicdef import APIC_DEFAULT_PHYS_BASE

from kvmsim.hw.memory import GuestMemory
from kvmsim.hw.pml import PageModLog
from kvmsim.hw.registers import SNAP_IDS, CpuState
from kvmsim.hw.cslimit import CodeLimit
from kvmsim.hw.segcheck import ReadOnlySegments
from kvmsim.hw.shadowpt import ShadowPaging
from kvmsim.hw.trap import InsnTrap, _Decoded
from kvmsim.hw.ucraw import NO_COUNT, NO_TIMEOUT, UNTIL_NEVER, emu_counter_offset, uc_emu_start

X86_CR4_OSXSAVE = 1 << 18
X86_CR4_PCE = 1 << 8
PAUSE_CYCLES = 140    # PAUSE latency on Skylake and later (Intel optimization manual)
EFLAGS_RF = 1 << 16
LOCAL_TIMER_VECTOR = 0xEC    # the host's APIC timer vector (arch/x86/include/asm/irq_vectors.h)
EFLAGS_VM = event.EFLAGS_VM
# MSRs that hold a linear address; WRMSR of a non-canonical value is #GP (SDM WRMSR).
MSR_TSC_AUX = 0xC0000103
_NULLABLE_SEGS = ("es", "ds", "fs", "gs")    # data segment registers IRET to an outer ring may null
CANONICAL_MSRS = frozenset({0xC0000100, 0xC0000101, 0xC0000102, 0x175, 0x176})
# KVM's exception bitmap with EPT on (vmx update_exception_bitmap); KVM adds #GP for the VMware backdoor.
DEFAULT_EXCEPTION_BITMAP = frozenset({Vector.UD, Vector.MC, Vector.AC})
# Enum members read on every exit, bound once (a class-attribute lookup on an Enum costs ~70 ns).
_ACTION_EXIT, _IO_INSTRUCTION = Action.EXIT, ExitReason.IO_INSTRUCTION
_IO_INSTRUCTION_NR = int(ExitReason.IO_INSTRUCTION)
_VECTOR_PF = Vector.PF
_ENABLE_EPT = SECONDARY_EXEC_ENABLE_EPT


class SiliconVcpu(CpuState, GuestMemory, InsnTrap, ReadOnlySegments, CodeLimit, DebugTrap, ShadowPaging,
                  PageModLog, DebugRegs):
    """One logical CPU.  KVM's model drives it with `vmx_vcpu_enter_exit`-style `enter_guest()`."""

    def __init__(self) -> None:
        self.uc: Uc | None = None
        self.vmcs = Vmcs()
        self.memslots: dict[int, tuple[int, int, int]] = {}   # slot -> (gpa, size, host address)
        self.readonly_slots: set[int] = set()                 # KVM_MEM_READONLY slots
        self._slot_list: list[tuple[int, int, int]] = []            # memory.py: what memslot_at scans
        self._readonly_list: list[tuple[int, int, int]] = []        # ... the KVM_MEM_READONLY ones
        self._last_slot: tuple[int, int, int] | None = None         # ... and the one it found last
        self._pt_tables: dict[int, tuple[memoryview, int] | bool] = {}   # memory.py: walk's table views
        self._pt_tables_for: list | None = None                          # ... valid for this _slot_list
        self._walk_memo: dict[tuple, tuple] = {}                          # memory.py: walk's entries read
        self._dirty: dict[str, tuple[int, int]] = {}   # registers to write at the next entry
        self._wbuf = ctypes.c_uint64()
        self._wbuf_ref = ctypes.byref(self._wbuf)     # made once: passed to every uc_reg_write
        self._begin = ctypes.c_uint64()   # emu_start's begin, reused
        self.ept_mmio_gfns: set[int] = set()     # EPT entries KVM turned into MMIO SPTEs (misconfig)
        self.msr_passthrough: set[int] = set()   # MSR bitmap: indices that do not exit
        self.exception_bitmap: frozenset[int] = DEFAULT_EXCEPTION_BITMAP
        self.kick_pending = False   # set from another thread (a signal to the vCPU thread)
        self.entry_checks_due = False   # KVM_SET_SREGS wrote guest state the next VM entry must check
        self.written_rflags: int | None = None   # RFLAGS as KVM_SET_REGS wrote it (the engine drops reserved bits)
        # A host NMI (perf PMI, watchdog) after this many guest instructions without another exit.
        self.host_nmi_every: int | None = None
        # What arrives then: "nmi" (EXCEPTION_NMI) or "tick", the host's timer interrupt
        # (EXTERNAL_INTERRUPT, LOCAL_TIMER_VECTOR); simplified: one kind of host event per vCPU.
        self.host_event_kind = "nmi"
        # KVM's host hrtimer for an in-kernel device (the PIT) fires at this guest_insns count: the
        # host's timer interrupt, an EXTERNAL_INTERRUPT exit (x86.kvm_host_timer_deadline sets it per entry).
        self.host_timer_deadline: int | None = None
        self.stall_cycles = 0      # cycles in which no instruction retired (stall(): serializing writes)
        # The run's instruction budget (limits.max_guest_insns); None: nothing counted, no cost.
        # guest_insns counts what the silicon retired while a budget is set, stepped instructions
        # included, and so is an instruction that VM-exits and that KVM completes (the kernel's
        # kvm_pmu_instruction_retired when it skips or emulates one).
        self.insn_limit: int | None = None
        self.guest_insns = 0
        self.insn_limit_hit = False
        self.halted_forever: int | None = None   # KVM's vcpu_block found nothing that could ever wake the
                                                 # vCPU (RIP after its HLT): the budget ends the run there
        self._counter: ctypes.c_size_t | None = None   # unicorn's emu_counter, read in place
        self._trap_init()
        self._ro_init()
        self._cs_limit_init()
        self._dbg_init()
        self._spt_init()
        self._pml_init()
        self._debugregs_init()
        self._exit_count = 0                  # VM exits so far (a PAUSE loop ends at one)
        self._counting = False                # the current uc_emu_start counts instructions (_on_rdtsc_raw)
        self._ple_rip, self._ple_count, self._ple_exits = -1, 0, -1
        self._pending: tuple | None = None
        self._rf_armed = False   # an IRET set RFLAGS.RF: clear it once the next instruction retires
        self.native_exceptions = 0
        self._mode: str | None = None        # cached CPU mode; invalidated whenever it can change
        self._uch = None
        self._regbuf = ctypes.c_uint64()
        self._regbuf_ref = ctypes.byref(self._regbuf)   # made once: passed to every uc_reg_read
        self._rc: dict[str, int] = {}        # register values read since the guest last ran
        self._efer: int | None = None
        self._mode_stale = False
        self._mode_key: int | None = None
        self._hflags_dirty = False
        self._hflags: ctypes.c_uint32 | None = None     # env->hflags, read in place (cpux86.live_u32)
        self._ss_flags: ctypes.c_uint32 | None = None   # env->segs[R_SS].flags, likewise
        self._power_on()

    def _power_on(self) -> Uc:
        """One x86-64 CPU for every mode: the engine is always unicorn's 64-bit one; the state a
        new vCPU starts in is KVM's to set (kvm/reset.py, kvm_vcpu_reset)."""
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.ctl_set_cpu_model(quirks.SILICON_CPU_MODEL)   # before anything makes unicorn create its CPU
        quirks.no_until_address(uc)
        quirks.fpu_reset(uc)     # XCR0, FCW and MXCSR as KVM's vCPU reset leaves them; unicorn has 0s
        self._uch = uc._uch
        self._env = env_of(uc)
        self._hflags = live_u32(self._env, "hflags")
        self._ss_flags = live_u32(self._env, "flags", R_SS)
        self._counter = ctypes.c_size_t.from_address(uc._uch.value + emu_counter_offset())
        ids = SNAP_IDS
        self._snap_ids = (ctypes.c_int32 * len(ids))(*ids)
        self._snap_vals = (ctypes.c_uint64 * len(ids))()
        self._snap_view = memoryview(self._snap_vals).cast("B").cast("Q")   # tolist() beats vals[:]
        self._snap_ptrs = (ctypes.c_void_p * len(ids))(*(ctypes.addressof(self._snap_vals) + 8 * i
                                                         for i in range(len(ids))))
        for slot, (gpa, size, addr) in self.memslots.items():
            uc.mem_map_ptr(gpa, size, self._slot_prot(slot), addr)
        # Registered raw (unicorn's Python wrapper adds ~1 us to every MMIO exit); kept alive on self.
        self._unmapped_cb = HOOK_MEM_INVALID_CFUNC(self._on_unmapped_raw)
        self._unmapped_hook = uc_hook_h()
        status = uclib.uc_hook_add(self._uch, ctypes.byref(self._unmapped_hook),
                                   UC_HOOK_MEM_UNMAPPED | UC_HOOK_MEM_WRITE_PROT,
                                   self._unmapped_cb, None, ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status:
            raise UcError(status)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        # RDTSC and RDTSCP read the virtual TSC (TSC offsetting over retired instructions), raw like
        # the hook above; RDTSCP also reads IA32_TSC_AUX, which KVM loads into the CPU.
        self._rdtsc_cb = HOOK_INSN_CPUID_CFUNC(self._on_rdtsc_raw)
        self._rdtscp_cb = HOOK_INSN_CPUID_CFUNC(self._on_rdtscp_raw)
        self._rdtsc_hook, self._rdtscp_hook = uc_hook_h(), uc_hook_h()
        for hook, cb, insn in ((self._rdtsc_hook, self._rdtsc_cb, UC_X86_INS_RDTSC),
                               (self._rdtscp_hook, self._rdtscp_cb, UC_X86_INS_RDTSCP)):
            status = uclib.uc_hook_add(self._uch, ctypes.byref(hook), UCC.UC_HOOK_INSN, cb,
                                       None, ctypes.c_uint64(1), ctypes.c_uint64(0), ctypes.c_int(insn))
            if status:
                raise UcError(status)
        self.uc = uc
        self._trap_power_on()
        self._dbg_power_on()
        self._pml_power_on()
        return uc

    def power_off(self) -> None:
        """The VM is gone: close the engine now rather than at the next garbage collection.

        Unicorn's Python wrapper keeps our bound-method hooks in the Uc, which keeps us, which
        keeps the Uc: without this the engine (1 GiB of reserved code buffer) outlives the run
        until the cycle collector happens to run.  Hook handles die with it, so the trap and
        read-only-segment bookkeeping starts afresh should the CPU ever be powered on again.
        """
        uc, self.uc, self._env, self._uch = self.uc, None, None, None
        self._hflags = self._ss_flags = None
        self._pt_tables.clear()        # views of guest RAM the VMM is about to release
        self._walk_memo.clear()
        if uc is None:
            return
        close = getattr(uc, "_Uc__finalizer", None)   # the wrapper's weakref.finalize: uc_close, once
        if close is not None:
            close()
        callbacks = getattr(uc, "_callbacks", None)
        if isinstance(callbacks, dict):
            callbacks.clear()                          # drops the bound methods: the cycle is broken
        self._unmapped_cb = self._unmapped_hook = None
        self._rdtsc_cb = self._rdtsc_hook = self._rdtscp_cb = self._rdtscp_hook = None
        self._trap_init()
        self._ro_init()
        self._cs_limit_init()
        self._dbg_hooks.clear()
        self._debugregs_power_off()

    def enter_guest(self) -> None:
        """VM entry, run, VM exit: on return the VMCS exit fields describe why the guest stopped."""
        cpu: CpuState = self   # self; the compiled path reads these fields as CpuState struct members (registers.pxd)
        uc = self.uc or self._power_on()
        vmcs = cpu.vmcs
        if cpu._exit_count >= cpu._sweep_at:
            self.sweep_pages(self.linear_rip() >> 12)
        if cpu.entry_checks_due:
            if self._invalid_guest_segments():   # VM-entry failure: KVM_EXIT_FAIL_ENTRY (vmx.py)
                self._exit(int(ExitReason.INVALID_STATE) | VMX_EXIT_REASONS_FAILED_VMENTRY)  # type: ignore[arg-type]
                return
            cpu.entry_checks_due, cpu.written_rflags = False, None
        pending_db, vmcs.guest_pending_dbg_exceptions = vmcs.guest_pending_dbg_exceptions & 0xF, 0
        if vmcs.vm_entry_intr_info_field & 0x80000000:
            if (vmcs.vm_entry_intr_info_field & 0x700) == IntrType.EXT_INTR and not self._intr_window_open():
                # SDM 26.3.1.4-5: injecting an external interrupt needs RFLAGS.IF = 1 and no STI/MOV-SS
                # blocking; otherwise VM entry fails (invalid guest state), the event not delivered.
                vmcs.vm_entry_intr_info_field = 0
                self._exit(int(ExitReason.INVALID_STATE) | VMX_EXIT_REASONS_FAILED_VMENTRY)  # type: ignore[arg-type]
                return
            pending_db = 0          # an event injected at VM entry: the pending #DB conditions are lost
            info, vmcs.vm_entry_intr_info_field = vmcs.vm_entry_intr_info_field, 0
            if self._deliver(info & 0xFF, IntrType(info & 0x700),
                             vmcs.vm_entry_exception_error_code if info & 0x800 else None,
                             cr2=None, inst_len=vmcs.vm_entry_instruction_len):
                return
        # Every exit path sets the exit fields through _exit(); IDT-vectoring info stays 0 because
        # event delivery completes inside one entry here.
        # Unicorn has no instruction breakpoints, so it neither honours nor clears RFLAGS.RF; the
        # CPU clears RF when the next instruction completes (SDM 18.3.1.1).  KVM leaves RF set on
        # an unfinished REP string (emulate.c), so drop it here, before the guest can see it.
        rflags = cpu._rc.get("rflags")     # self.reg("rflags"), its cached value looked up in place
        if rflags is None:
            rflags = self.reg("rflags")
        cpu._rf_armed = False
        movss_entry_rip = (self.linear_rip() if cpu._bp_exec and vmcs.guest_interruptibility_info
                           & GUEST_INTR_STATE_MOV_SS else None)
        if rflags & EFLAGS_RF:
            if cpu._bp_exec:               # RF suppresses an instruction breakpoint on the first instruction
                cpu._rf_armed = True
            else:
                self.set_reg("rflags", rflags & ~EFLAGS_RF)
        if cpu._pml_overflow:
            self._pml_entry()
        if pending_db:                      # delivered right after VM entry: intercepted, so an exit
            self._exception(Vector.DB, None, qual=pending_db)
            return
        limit = cpu.insn_limit
        while True:
            if limit is not None and cpu.guest_insns >= limit:
                return self._insn_budget_spent()
            if cpu.kick_pending:
                self._exit(ExitReason.EXTERNAL_INTERRUPT, intr=0x80000000 | 0xEC)  # host timer/IPI kick
                return
            win = vmcs.cpu_based_vm_exec_control & CPU_BASED_INTR_WINDOW_EXITING
            if win and self._intr_window_open():
                return self._exit(ExitReason.INTERRUPT_WINDOW)
            timer = vmcs.vmx_preemption_timer_deadline
            if timer is not None and cpu.guest_insns >= timer:
                return self._exit(ExitReason.PREEMPTION_TIMER)
            host_timer = cpu.host_timer_deadline
            if host_timer is not None:
                if cpu.guest_insns >= host_timer:
                    return self._exit(ExitReason.EXTERNAL_INTERRUPT, intr=0x80000000 | LOCAL_TIMER_VECTOR)
                timer = host_timer if timer is None else min(timer, host_timer)   # counted to the earlier stop
            if cpu._dbg_on and self._dbg_boundary(self.linear_rip()):
                continue                           # a debugger stop (debugtrap.py); state may have changed
            cpu._pending = None
            if _VECTOR_PF in cpu.exception_bitmap:    # shadow paging: a #PF exit must leave CR2 as it is
                cpu._cr2_at_entry = self.cr(2)
            if (vmcs.cpu_based_vm_exec_control, vmcs.secondary_vm_exec_control) != cpu._controls_key:
                self._check_controls()
            rc = cpu._rc
            xkey = (rc.get(0), rc.get(3), rc.get(4), cpu._efer)   # _check_translation's own test, first
            if xkey != cpu._xlate_key or None in xkey:
                self._check_translation()
            if cpu._ro_segs or cpu._mode != "long64" or cpu._mode_stale:
                self._check_ro_segments()          # (64-bit mode ignores data segment types)
                self._check_code_limit()
            rip = cpu._rc.get("rip")
            if rip is None:
                rip = self.reg("rip")
            start = rip if cpu._mode == "long64" and not cpu._mode_stale else self.linear_rip()
            status = 0   # uc_err; an UcError object is built only if we report it
            rf_step = False
            dec = cpu._exits.get(start)
            if dec is None or dec.insn is None or self.stop_hook_at(start) is None:
                # (At a known exiting instruction the stop hook would fire at once: skip the entry.)
                if cpu._dirty:
                    cpu._dirty.pop("rip", None)   # emu_start's `begin` is the RIP it loads
                    if cpu._dirty:
                        self.flush_regs()
                begin = cpu._begin
                begin.value = rip
                rf = rf_step = cpu._rf_armed or cpu.data_bps
                if limit is None and not (cpu._dbg_on and cpu._dbg_step) and not win and timer is None and not rf:
                    cpu._counting = False
                    status = uc_emu_start(cpu._uch, begin, UNTIL_NEVER, NO_TIMEOUT,
                                          ctypes.c_size_t(cpu.host_nmi_every) if cpu.host_nmi_every else NO_COUNT)
                else:
                    # The count hook sees each instruction before it runs; it (or a stop hook, a fault)
                    # stops at one that then does not run: retired = counter - 1.  A debugger's single
                    # step counts one instruction out, and so does a closed interrupt window (the CPU
                    # checks it at every instruction boundary); the preemption timer counts down.
                    left = 1 if limit is None else limit - cpu.guest_insns
                    if timer is not None:
                        left = timer - cpu.guest_insns if limit is None else min(left, timer - cpu.guest_insns)
                    if cpu._dbg_step or win or rf:
                        left = min(left, 1)
                    elif limit is not None:            # counted in slices: sweep_pages between them
                        left = max(min(left, cpu._sweep_insns_at - cpu.guest_insns), 1)
                    shadow = self._shadow_kind(begin.value) if win else 0
                    cpu._between = False
                    cpu._counting = limit is not None or win or timer is not None
                    status = uc_emu_start(cpu._uch, begin, UNTIL_NEVER, NO_TIMEOUT, ctypes.c_size_t(
                        min(left, cpu.host_nmi_every) if cpu.host_nmi_every else left))
                    done = cpu._counter.value - (0 if cpu._between else 1)   # _counted_retired, inlined
                    if done < 0:
                        done = 0
                    if limit is not None or win or timer is not None:
                        cpu.guest_insns += done
                    if win and done:
                        self._set_shadow(shadow)
                    rf = rf and done > 0
                    if cpu._dbg_on:
                        self._dbg_progress(done)
                self._snapshot()  # the guest may have switched modes (MOV CR0 is native)
                if rf:
                    self._clear_rf()
                if rf_step and cpu.data_bps and cpu._pending is None and not status:
                    if self._data_bp_trap():
                        return
                if uc._hook_exception is not None:   # the wrapper keeps a hook's error for its own emu_start
                    err, uc._hook_exception = uc._hook_exception, None
                    raise KvmSimBug(f"a unicorn hook raised {err!r} at rip {self.reg('rip'):#x}") from err
            if cpu._rescan:
                cpu._rescan = False
                self._apply_code_changes()
                if cpu._pending is None and not status:
                    continue
            pending = cpu._pending
            if pending is not None:
                if pending[0] == "mem":            # _handle_pending's EPT case, inlined (the MMIO path)
                    cpu._pending = None
                    if self._ept_exit(pending[1], pending[2], pending[2]):
                        return
                    continue
                if self._handle_pending():
                    return
                continue
            if status:
                if status == UCC.UC_ERR_INSN_INVALID:
                    if self._insn_invalid():
                        return
                    continue
                raise KvmSimBug(f"unicorn stopped with {UcError(status)} at rip {self.reg('rip'):#x}")
            if limit is not None and cpu.guest_insns >= limit:
                continue                        # the budget is spent before the instruction at RIP
            here = cpu._rc["rip"] if cpu._mode == "long64" and not cpu._mode_stale else self.linear_rip()
            if cpu._dbg_on:
                if self._dbg_boundary(here):
                    continue
                if here in cpu._dbg_addrs and self.stop_hook_at(here) is None:
                    if self._dbg_step_over(here):      # stopped only for a breakpoint reported already
                        return
                    continue
                if cpu._dbg_reported is not None:     # the instruction reported runs now (or exits)
                    cpu._dbg_reported = None
                    self._dbg_update()
            if win and self._intr_window_open():
                return self._exit(ExitReason.INTERRUPT_WINDOW)   # checked before the next instruction, exiting or not
            if cpu._bp_movss and here in cpu._bp_movss:
                # MOV SS / POP SS just before an instruction breakpoint: run it, then the instruction
                # after it runs under MOV-SS blocking, which suppresses its breakpoint on Intel.
                if self._step_native(here):
                    return
                if self.linear_rip() == cpu._bp_movss[here] and self.stop_hook_at(self.linear_rip()) is None:
                    if self._step_native(self.linear_rip()):
                        return
                continue
            if cpu._bp_exec and here in cpu._bp_exec:
                # MOV-SS blocking at VM entry (KVM emulated the MOV SS) suppresses it too, on Intel
                quiet = self.reg("rflags") & EFLAGS_RF or here == movss_entry_rip
                if not quiet:                             # a fault-like #DB before the instruction
                    return self._exception(Vector.DB, None, qual=cpu._bp_exec[here])
                if self.stop_hook_at(here) is None:       # RF: it runs, its breakpoint quiet
                    movss_entry_rip = None
                    if self._step_native(here):
                        return
                    self._clear_rf()
                    continue
            dec = cpu._exits.get(here)
            if dec is not None and dec.mode == cpu._mode and not cpu._mode_stale:
                if self._exiting_insn(dec):           # a stop classified before (the hot path)
                    return
                continue
            if self.stop_hook_at(here) is not None:
                dec = self.classify_at(here)
                if dec is None:          # RIP no longer fetchable: let the CPU take the fault
                    if self._step_native(here):
                        return
                    continue
                if self._exiting_insn(dec):
                    return
                continue
            if cpu.kick_pending:
                continue
            if win or rf_step or (timer is not None and cpu.guest_insns >= timer):
                continue                        # one step (window closed, RF to clear), or the timer is due
            if limit is not None and cpu.guest_insns >= cpu._sweep_insns_at:
                self.sweep_pages(here >> 12)    # a slice of counted instructions ran without an exit
                continue
            if cpu.host_nmi_every:   # the instruction budget ran out: the host NMI (or timer tick) arrives
                if self.host_event_kind == "tick":
                    return self._exit(ExitReason.EXTERNAL_INTERRUPT, intr=0x80000000 | LOCAL_TIMER_VECTOR)
                return self._exit(ExitReason.EXCEPTION_NMI, intr=NMI_HOST_INTR_INFO)
            if quirks.reset_old_exception(uc):
                continue  # unicorn swallowed an escalated fault and halted: re-run the instruction
            raise KvmSimBug(f"guest stopped for no reason at rip {self.reg('rip'):#x}")

    def _data_bp_trap(self) -> bool:
        """After a run with a data breakpoint armed: the #DB trap of a breakpoint the instruction
        hit, or of one a MOV SS / POP SS held back once the instruction after it completed (the
        CPU left it).  True on the exit."""
        bits, self.db_hit = self.db_hit, 0
        if self.db_held and self.reg("rip") != self.db_held_until:
            bits, self.db_held = bits | self.db_held, 0
        return bool(bits) and self._exception(Vector.DB, None, qual=bits)

    def _clear_rf(self) -> None:
        """RFLAGS.RF is cleared when an instruction completes (SDM 18.3.1.1), IRET's target included;
        unicorn clears it only where a translation block ends (and its PUSHF pushes it), so an
        IRET that set it has its next instruction run alone and RF dropped after it."""
        self._rf_armed = False
        flags = self.reg("rflags")
        if flags & EFLAGS_RF:
            self.set_reg("rflags", flags & ~EFLAGS_RF)

    def _counted_retired(self) -> int:
        """Instructions a counted uc_emu_start retired.  The count hook sees each instruction before
        it runs, so a stop by it, a stop hook or a fault leaves the counter one past the retired ones;
        a stop between instructions (a block hook, a page-table write, a kick) comes before the next
        count hook, which then does not run: the counter is exact."""
        return max(self._counter.value - (0 if self._between else 1), 0)

    def retired(self) -> None:
        """The model completed an instruction itself (not in unicorn): it retires in the guest."""
        if self.insn_limit is not None:
            self.guest_insns += 1
        if self._dbg_on:
            self._dbg_progress(1)

    def stall(self, cycles: int) -> None:
        """The core spends `cycles` beyond the one of the instruction it retires: the guest TSC and
        the timers run on meanwhile (KVM's clock reads stall_cycles; within this run the TSC offset
        and the deadlines, counted in retired instructions, move by as much)."""
        self.stall_cycles += cycles
        vmcs = self.vmcs
        vmcs.tsc_offset += cycles
        if vmcs.vmx_preemption_timer_deadline is not None:
            vmcs.vmx_preemption_timer_deadline -= cycles
        if self.host_timer_deadline is not None:
            self.host_timer_deadline -= cycles

    def _insn_budget_spent(self) -> bool:
        """The instruction budget is spent: the vCPU leaves the guest as for a host kick (KVM_RUN
        returns -EINTR), and the VMM reads insn_limit_hit.  (Not KVM: a simulator limit.)"""
        self.insn_limit_hit = self.kick_pending = True
        return self._exit(ExitReason.EXTERNAL_INTERRUPT, intr=0x80000000 | 0xEC)

    def _invalid_guest_segments(self) -> str:
        """The VM-entry checks on guest segment and descriptor-table bases, RIP and RFLAGS (SDM
        26.3.1.2-4) that KVM_SET_SREGS / KVM_SET_REGS let through; '' if they pass.  Simplified: the
        access-rights and limit checks are not modelled (48-bit canonical linear addresses)."""
        s = self.get_sregs()

        def canonical(a: int) -> bool:
            return (a >> 47) in (0, (1 << 17) - 1)

        rip = self.reg("rip")
        rflags = self.reg("rflags") if self.written_rflags is None else self.written_rflags
        long_mode = bool(s.efer & paging.EFER_LMA)
        if (not long_mode or not s.cs.l) and rip >> 32:
            return f"RIP {rip:#x} has bits 63:32 set outside 64-bit mode"
        if long_mode and s.cs.l and not canonical(rip):
            return f"RIP {rip:#x} is not canonical"
        if rflags & ~0x3F7FD7 or not rflags & 2:     # reserved: 63:22, 15, 5, 3 zero; bit 1 one
            return f"RFLAGS {rflags:#x} has reserved bits wrong"
        if rflags & (1 << 17) and (long_mode or not s.cr0 & 1):
            return f"RFLAGS.VM set with {'IA-32e mode' if long_mode else 'CR0.PE clear'}"

        if s.cs.base >> 32:
            return f"CS base {s.cs.base:#x} has bits 63:32 set"
        for name in ("ss", "ds", "es"):
            seg = getattr(s, name)
            if seg.present and not seg.unusable and seg.base >> 32:
                return f"{name.upper()} base {seg.base:#x} has bits 63:32 set"
        for name in ("fs", "gs", "tr", "ldt"):
            seg = getattr(s, name)
            if (name != "ldt" or (seg.present and not seg.unusable)) and not canonical(seg.base):
                return f"{name.upper()} base {seg.base:#x} is not canonical"
        for name in ("gdt", "idt"):
            if not canonical(getattr(s, name).base):
                return f"{name.upper()}R base {getattr(s, name).base:#x} is not canonical"
        return ""

    def _exit(self, reason: ExitReason, qual: int = 0, length: int = 0, intr: int = 0, err: int = 0,
              gpa: int = 0, gla: int = 0) -> bool:
        cpu: CpuState = self   # (registers.pxd: struct fields on the compiled path)
        v = cpu.vmcs
        if cpu.db_held:                   # a #DB held back by MOV SS waits in the VMCS
            v.guest_pending_dbg_exceptions |= cpu.db_held
            cpu.db_held = 0
        cpu._exit_count += 1
        v.vm_exit_reason, v.exit_qualification, v.vm_exit_instruction_len = int(reason), qual, length
        v.vm_exit_intr_info, v.vm_exit_intr_error_code = intr, err
        v.idt_vectoring_info_field = 0
        v.guest_physical_address, v.guest_linear_address = gpa, gla
        return True

    def _exiting_insn(self, dec: _Decoded) -> bool:
        """The CPU reached a candidate instruction: exit, or do what the silicon does itself."""
        insn = dec.insn
        if insn is None:
            return self._run_natively(dec)
        if insn.reason is _IO_INSTRUCTION:                 # the hot path first
            mode = self.mode()
            io = dec.io.get(mode)
            if io is None:  # the qualification without the port, cached per mode
                d = decode_io(dec.code, self._default_op32(), mode == "long64")
                base = IoExitQual(d.size, d.is_in, d.string, d.rep, d.imm_port is not None, 0).encode()
                io = dec.io[mode] = (base, d.imm_port)
            base, imm_port = io
            port = imm_port if imm_port is not None else self.reg("rdx") & 0xFFFF
            if mode != "real" and not self._io_permitted(port, (base & 7) + 1):
                # SDM 25.1.1: the I/O-permission #GP comes before the VM exit.
                return self._exception(Vector.GP, 0)
            return self._exit(_IO_INSTRUCTION_NR, base | (port << 16), dec.length)
        if insn.action is Action.CR:
            return ctrlregs.cr_dr_access(self, dec.code, dec.length)
        if insn.action is Action.FAR:
            return self._far_transfer(dec)
        if insn.action is Action.UD:
            return self._exception(Vector.UD, None)
        fault = CPL0_FAULT.get(dec.mnemonic)
        if fault is not None and self.cpl() > 0 and not (dec.mnemonic == "rdpmc" and self.cr(4) & X86_CR4_PCE):
            return self._exception(fault, 0 if fault == Vector.GP else None)
        if dec.mnemonic == "pause" and not insn_exits(self.vmcs, "pause"):
            return self._pause_loop(dec)
        if insn.reason is ExitReason.INVPCID:
            return self._invpcid(dec)
        if insn.action is Action.CONTROL or (insn.action is _ACTION_EXIT and dec.mnemonic in CONTROLLED):
            if not insn_exits(self.vmcs, dec.mnemonic):
                return self._run_natively(dec)
            if dec.mnemonic == "invlpg":       # qualification: the linear address of the operand
                return self._exit(insn.reason, self.mem_operand_linear(self.linear_rip()), dec.length)
            return self._exit(insn.reason, 0, dec.length)
        if insn.action is _ACTION_EXIT:
            return self._exit(insn.reason, 0, dec.length)
        if insn.action is Action.IRET:
            return self._iret(dec)
        if insn.action is Action.MSR:
            ecx = self.reg("rcx") & 0xFFFF_FFFF
            if ecx not in self.msr_passthrough:
                return self._exit(insn.reason, 0, dec.length)
            return self._passthrough_msr(insn.reason is ExitReason.MSR_WRITE, ecx, dec.length)
        # Soft interrupt: INT3/INTO/INT1/INT n go through the guest IDT unless intercepted (below).
        op = dec.code[-2] if dec.mnemonic == "int" else dec.code[-1]
        vector = {0xCC: Vector.BP, 0xCE: Vector.OF, 0xF1: Vector.DB}.get(op, dec.code[-1])
        if dec.mnemonic == "into" and not self.reg("rflags") & (1 << 11):
            self.set_reg("rip", self.reg("rip") + dec.length)
            self.retired()
            return False
        itype = IntrType.SOFT_INTR if dec.mnemonic == "int" else (
            IntrType.PRIV_SW_EXCEPTION if vector == Vector.DB else IntrType.SOFT_EXCEPTION)
        if dec.mnemonic != "int" and vector in self.exception_bitmap:
            # INT3, INTO and INT1 are intercepted through the exception bitmap (INT n never is): the
            # VM exit replaces the delivery, RIP still on the instruction, its length in the exit.
            return self._exit(ExitReason.EXCEPTION_NMI, 0, dec.length, intr=intr_info(vector, itype))
        if self._deliver(vector, itype, None, cr2=None, inst_len=dec.length):
            return True
        self.retired()     # a software interrupt retires once its delivery is done
        if self.db_held:   # the #DB MOV SS held back comes once INT n has completed
            bits, self.db_held = self.db_held, 0
            return self._exception(Vector.DB, None, qual=bits)
        return False

    def _pause_loop(self, dec: _Decoded) -> bool:
        """PAUSE-loop exiting: a PAUSE exits once its spin loop has lasted longer than PLE_Window.
        Simplified (no cycle count): PAUSEs at one address with no VM exit between them are one
        loop, each taking PAUSE_CYCLES (Skylake's PAUSE latency)."""
        here = self.linear_rip()
        count = self._ple_count + 1 if self._ple_rip == here and self._ple_exits == self._exit_count else 1
        self._ple_rip, self._ple_count = here, count
        if pause_loop_exits(self.vmcs, self.cpl(), count * PAUSE_CYCLES):
            self._ple_count = 0
            return self._exit(ExitReason.PAUSE_INSTRUCTION, 0, dec.length)
        self._ple_exits = self._exit_count
        return self._run_natively(dec)

    def _insn_invalid(self) -> bool:
        """Unicorn refused the instruction at RIP.  Some exiting instructions it cannot translate
        (VMREAD, VMWRITE) exit before any #UD; a VEX access to MMIO takes its EPT exit; anything
        else is #UD.  True on an exit."""
        dec = self.classify_at(self.linear_rip())
        if dec is not None and dec.insn is not None and dec.insn.action in (Action.EXIT, Action.MSR, Action.UD):
            return self._exiting_insn(dec)
        if self._vex_mmio_exit():
            return True
        return self._exception(Vector.UD, None)

    def _invpcid(self, dec: _Decoded) -> bool:
        """INVPCID: #UD unless enable-INVPCID; an exit iff INVLPG exiting (KVM without EPT), with the
        operands in VMX_INSTRUCTION_INFO and the displacement as qualification; else the CPU's own
        TLB flush (unicorn has no INVPCID).  Simplified: the native path checks only the type."""
        exits = invpcid_exits(self.vmcs)
        if exits is None:
            return self._exception(Vector.UD, None)
        here = self.linear_rip()
        info, disp, kind = insn_info.vmx_instruction_info(self, here, dec.code)
        if exits:
            self.vmcs.vmx_instruction_info = info
            return self._exit(ExitReason.INVPCID, disp, dec.length)
        if kind > 3:
            return self._exception(Vector.GP, 0)
        self.flush_tlb()
        self.set_reg("rip", self.reg("rip") + dec.length)
        self.retired()
        return False

    def _run_natively(self, dec: _Decoded) -> bool:
        """An instruction that does not exit here: the silicon's own result (fixups.py where unicorn
        would differ), else unicorn runs it; True on an exit.  A split lock with bus-lock
        detection on exits after it (trap-like, SDM 26.2: BUS_LOCK)."""
        if (self.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_BUS_LOCK_DETECTION
                and insn_info.is_split_lock(self, self.linear_rip(), dec.code)):
            if self._run_natively_once(dec):
                return True
            return self._exit(ExitReason.BUS_LOCK)
        return self._run_natively_once(dec)

    def _run_natively_once(self, dec: _Decoded) -> bool:
        done = fixups.apply_at_rip(self)
        if done is not None:
            return done
        return self._step_native(self.linear_rip(), dec.length if falls_through(dec.mnemonic) else 0)

    def _vex_mmio_exit(self) -> bool:
        """Unicorn (QEMU 5 TCG) has no AVX, so it refuses VEX instructions.  Silicon with
        CR4.OSXSAVE set would start one whose memory operand has no memslot and stop it with
        an EPT violation/misconfig; make that exit.  Anything else stays #UD (AVX on RAM is not
        modelled)."""
        here = self.linear_rip()
        try:
            code = self.read_linear_bytes(here, 15)
        except (paging.PageFault, UcError):
            return False
        i = 0
        while i < len(code) and code[i] in (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x67):
            i += 1
        if i >= len(code) - 1 or code[i] not in (0xC4, 0xC5) or not self.cr(4) & X86_CR4_OSXSAVE:
            return False
        if self.mode() != "long64" and code[i + 1] < 0xC0:
            return False  # outside 64-bit mode C4/C5 with ModRM.mod != 3 are LES/LDS
        found = self._mem_operand(here, code)
        if found is None:
            return False
        linear, write = found
        try:
            gpa = self.translate(linear, write=write)
        except paging.PageFault:
            return False
        if self.gpa_is_ram(gpa):
            return False
        return self._ept_exit(UC_MEM_WRITE_UNMAPPED if write else UC_MEM_READ_UNMAPPED, gpa, linear)

    def mem_operands(self, here: int, code: bytes) -> Iterator[tuple[int, bool, int]]:
        """(linear address, is written, size) of each explicit memory operand of the instruction at
        `here` (ES for a string instruction's DI operand, SS for a BP/SP base, else DS or the prefix)."""
        md = Cs(CS_ARCH_X86, self._cs_mode())
        md.detail = True
        insn = next(md.disasm(code, here), None)
        if insn is None:
            return
        for op in insn.operands:
            if op.type != X86_OP_MEM:
                continue
            linear = op.mem.disp + (insn.address + insn.size if op.mem.base == X86_REG_RIP else
                                    self._cs_reg(insn, op.mem.base))
            linear += self._cs_reg(insn, op.mem.index) * op.mem.scale
            if self.mode() != "long64":
                base = insn.reg_name(op.mem.base)
                seg = insn.reg_name(op.mem.segment) if op.mem.segment else (
                    "es" if insn.mnemonic.startswith(("stos", "movs", "ins", "scas", "cmps")) and base in ("edi", "di")
                    else "ss" if base in ("ebp", "esp", "bp", "sp") else "ds")
                linear = self.seg_base(seg) + (linear & (0xFFFF if self._cs_mode() == CS_MODE_16 else 0xFFFF_FFFF))
            linear &= (1 << 64) - 1 if self.mode() == "long64" else 0xFFFF_FFFF
            yield linear, bool(op.access & CS_AC_WRITE), op.size

    def _mem_operand(self, here: int, code: bytes) -> tuple[int, bool] | None:
        """(linear address, is written) of the first memory operand of the instruction at `here`."""
        for linear, written, _size in self.mem_operands(here, code):
            return linear, written
        return None

    def mem_operand_linear(self, here: int) -> int:
        """Linear address of the memory operand of the instruction at linear `here` (it has one)."""
        found = self._mem_operand(here, self.read_linear_bytes(here, 15))
        assert found is not None
        return found[0]

    def _cs_reg(self, insn, reg: int) -> int:
        """A capstone register id's value (0 for none), read through the 64-bit name."""
        if reg == 0:
            return 0
        name = insn.reg_name(reg)
        if name in ("riz", "eiz"):
            return 0                    # capstone's "no index" in a SIB byte
        full = "r" + name[1:] if name[0] == "e" else name
        v = self.reg(full)
        return v & 0xFFFF_FFFF if name[0] == "e" else v

    def _io_permitted(self, port: int, size: int) -> bool:
        """CPL <= IOPL (and not vm86), or the TSS I/O permission bitmap clears every port bit."""
        flags = self.reg("rflags")
        if not flags & EFLAGS_VM and (self.reg("cs") & 3) <= (flags >> 12) & 3:  # CPL = CS.RPL
            return True
        tr = self.segment("tr")
        if tr.unusable or tr.limit < 0x67:
            return False
        try:
            base = tr.base + self.read_linear(tr.base + 0x66, 2)
            last = base + port // 8 + 1
            if last > tr.base + tr.limit:
                return False
            bits = self.read_linear(base + port // 8, 2)
        except event.DeliveryFault:
            return False
        return not (bits >> (port & 7)) & ((1 << size) - 1)

    def _iret(self, dec: _Decoded) -> bool:
        """IRET runs natively; it unblocks NMIs, and with NMI-window exiting the CPU exits right after.
        A return to an outer ring nulls each data segment register its DPL no longer allows (SDM
        IRET: only the selector); the hidden base stays, which 64-bit mode still uses for FS and GS.
        QEMU zeroes the whole cache instead, so the bases are put back."""
        if self.reg("rflags") & taskswitch.EFLAGS_NT and taskswitch.switches_tasks(self.mode()):
            return self._task_decision(taskswitch.iret_task_return(self), taskswitch.TASK_SWITCH_IRET, dec)
        blocked = self.vmcs.guest_interruptibility_info & GUEST_INTR_STATE_NMI
        before = [(sc, sc.selector, sc.base) for sc in map(self._cache, _NULLABLE_SEGS)]
        if self._step_native(self.linear_rip()):
            return True
        for sc, selector, base in before:
            if sc.selector == 0 and sc.flags == 0 and selector & 0xFFFC:
                sc.base = base
        if self.reg("rflags") & EFLAGS_RF:
            self._rf_armed = True          # RF from the popped image lasts one more instruction
        if blocked:
            self.vmcs.guest_interruptibility_info &= ~GUEST_INTR_STATE_NMI
            if self.vmcs.cpu_based_vm_exec_control & CPU_BASED_NMI_WINDOW_EXITING:
                return self._exit(ExitReason.NMI_WINDOW)
        return False

    def _keep_null_fs_gs_base(self, kept: dict[str, int]) -> None:
        """An IRET to an outer ring nulls the selector of a data segment register more privileged
        than the new CPL, and only the selector: FS and GS keep their bases, which 64-bit code
        still uses (SDM IRET).  QEMU 5 loads a null descriptor, base 0, in their place."""
        if self.mode() not in ("long64", "compat"):
            return
        for name, base in kept.items():
            seg = self.segment(name)
            if seg.selector & ~3 == 0 and seg.base != base:
                seg.base = base
                self.set_segment(name, seg)

    def _step_native(self, addr: int, length: int = 0) -> bool:
        """Execute the one instruction at linear `addr` (= RIP) in unicorn, its stop hook lifted
        meanwhile; True on an exit.  `length` > 0 says it falls through to addr + length: unicorn
        then runs until there (translated afresh, so the stop is compiled in), which keeps the
        other translations; otherwise it is counted out (count = 1), which costs unicorn a flush
        of every translation at the next run."""
        uc = self.uc
        limit = self.insn_limit
        left = 0 if limit is None else limit - self.guest_insns
        if limit is not None and left <= 0:
            return self._insn_budget_spent()
        page = self._pages.get(addr >> 12)
        hook = page.hooks.pop(addr, None) if page is not None else None
        if hook is not None:
            self._del_stop_hook(hook)
            self._lifted = addr             # the block translated for the step must not hook it again
        dbg_hook = self._dbg_lift(addr) if self._dbg_hooks else None
        bp_hook = self.lift_exec_breakpoint(addr) if self._bp_exec_hooks else None
        self._pending = None
        err = None
        try:
            self.flush_regs()
            if length:
                quirks.remove_cache(uc, addr, addr + length + 1)
                uc.ctl_set_exits([addr + length])   # emu_start's `until` is inert (quirks.no_until_address)
                try:
                    # (With a budget the count stays on: unicorn flushes every translation when it goes off.)
                    uc.emu_start(self.reg("rip"), addr + length, 0, left)
                finally:
                    uc.ctl_set_exits([])
                    if limit is not None:   # the exit address stops before its count hook: counter = retired
                        self.guest_insns += min(self._counter.value, left)
                if (addr + length) >> 12 != addr >> 12:
                    quirks.reset_old_exception(uc)   # the exit's page may have no mapping: no_until_address
                uc.ctl_remove_cache(addr + length, addr + length + 1)   # the TB with that stop in it
            else:
                self._between = False
                try:
                    uc.emu_start(self.reg("rip"), 1 << 63, 0, 1)
                finally:
                    if limit is not None:
                        self.guest_insns += self._counted_retired()
                    # Simplified: the block the step ran (at addr, without its hook) stays cached; dropping
                    # it would drop the block the stop came from too, at every IRET.
        except UcError as e:
            err = e
        finally:
            self._rc.clear()
            self._mode_stale = True
            self._lifted = None
            if hook is not None and self._pages.get(addr >> 12) is page:
                page.hooks[addr] = self._add_stop_hook(addr)
            if dbg_hook is not None:
                self._dbg_arm(addr)
            if bp_hook is not None:
                self.rearm_exec_breakpoint(addr)
            if self._dbg_on and err is None:
                self._dbg_progress(1)
        if self._rescan:
            self._rescan = False
            self._apply_code_changes()
        if self._pending is not None:
            return self._handle_pending()
        if err is not None and err.errno == UCC.UC_ERR_INSN_INVALID:
            return self._insn_invalid()
        if err is not None:
            raise KvmSimBug(f"unicorn stopped with {err} stepping the instruction at {addr:#x}")
        return False

    def _passthrough_msr(self, write: bool, ecx: int, length: int) -> bool:
        """The MSR bitmap lets the guest touch this MSR directly: the CPU's own RDMSR/WRMSR.
        An address MSR (FS/GS/KERNEL_GS base, SYSENTER_ESP/EIP) takes canonical values only:
        WRMSR of any other is #GP(0) (unicorn stores it)."""
        if write:
            value = (self.reg("rdx") & 0xFFFF_FFFF) << 32 | (self.reg("rax") & 0xFFFF_FFFF)
            if ecx in CANONICAL_MSRS and (value >> 47) not in (0, 0x1FFFF):
                return self._exception(Vector.GP, 0)
            self.uc.msr_write(ecx, value)
        else:
            val = self.uc.msr_read(ecx)
            self.set_reg("rax", val & 0xFFFF_FFFF)
            self.set_reg("rdx", val >> 32)
        self.set_reg("rip", self.reg("rip") + length)
        self.retired()
        return False

    def set_xcr0(self, value: int) -> None:
        """The guest's XCR0, as KVM loads it before VM entry (kvm_load_guest_xsave_state)."""
        quirks.set_xcr0(self.uc or self._power_on(), value)
        self._rc.clear()

    def _default_op32(self) -> bool:
        mode = self.mode()
        return mode in ("prot32", "long64", "compat")

    def _handle_pending(self) -> bool:
        kind, *args = self._pending
        self._pending = None
        if kind == "mem":
            access, addr, size = args
            # Unicorn's unmapped-memory hook reports the physical address (cputlb.c passes paddr):
            # that is the GPA the EPT exit carries.  Simplified: the linear address is not known here.
            return self._ept_exit(access, addr, addr)
        if kind == "pml_full":              # pml.py: a dirty flag to set with the PML buffer full
            return self._exit(ExitReason.PML_FULL)
        if kind == "gp":                    # segcheck.py, cslimit.py: a read-only segment write, a fetch past CS's limit
            return self._exception(Vector.GP, 0)
        if kind == "intr":
            # The error code QEMU computed (unicorn's hook passes the vector only), and the
            # vector the CPU would have chosen where QEMU's differs (fixups.correct_exception).
            quirks.reset_old_exception(self.uc)
            vector, err = fixups.correct_exception(self, args[0], args[1])
            if vector == Vector.DB:              # unicorn's single-step trap (TF)
                return self._exception(vector, None, qual=self.take_db_bits())
            return self._exception(vector, err)
        raise KvmSimBug(f"unknown pending event {kind}")

    def _ept_exit(self, access: int, gpa: int, linear: int) -> bool:
        """No memslot behind the access at `gpa`: EPT violation, or misconfig once KVM cached an MMIO
        SPTE.  A write to a read-only memslot is an EPT violation on a present, readable+executable entry."""
        cpu: CpuState = self   # (registers.pxd: struct fields on the compiled path)
        if (gpa & ~0xFFF) == APIC_DEFAULT_PHYS_BASE and (cpu.vmcs.secondary_vm_exec_control
                                                       & SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES):
            return self._apic_access_exit(access, gpa)
        if not cpu.vmcs.secondary_vm_exec_control & _ENABLE_EPT:   # shadow paging (shadowpt.py)
            return self._shadow_pf_exit(access, gpa)
        if (gpa >> 12) in cpu.ept_mmio_gfns:
            return self._exit(ExitReason.EPT_MISCONFIG, 0, self._insn_len(), gpa=gpa)
        q = (EPT_VIOLATION_ACC_INSTR if access == UC_MEM_FETCH_UNMAPPED
             else EPT_VIOLATION_ACC_WRITE if access == UC_MEM_WRITE_UNMAPPED or access == UC_MEM_WRITE_PROT
             else EPT_VIOLATION_ACC_READ)
        q |= EPT_VIOLATION_GVA_IS_VALID | EPT_VIOLATION_GVA_TRANSLATED
        if access == UC_MEM_WRITE_PROT:
            q |= EPT_VIOLATION_READABLE | EPT_VIOLATION_EXECUTABLE
        return self._exit(ExitReason.EPT_VIOLATION, q, self._insn_len(), gpa=gpa, gla=linear)

    def _intr_window_open(self) -> bool:
        """RFLAGS.IF set and no STI/MOV-SS shadow: an external interrupt could be taken now."""
        return bool(self.reg("rflags") & 0x200) and not (
            self.vmcs.guest_interruptibility_info & (GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS))

    def _shadow_kind(self, linear: int) -> int:
        """The interrupt shadow the instruction at `linear` would open: STI (only if IF is 0 now),
        MOV SS / POP SS; 0 for any other.  Simplified: prefixes before them are not decoded."""
        try:
            code = self.read_linear_bytes(linear, 2)
        except (paging.PageFault, UcError):
            return 0
        if code[0] == 0xFB and not self.reg("rflags") & 0x200:
            return GUEST_INTR_STATE_STI
        if code[0] == 0x17 or (code[0] == 0x8E and (code[1] >> 3) & 7 == 2):
            return GUEST_INTR_STATE_MOV_SS
        return 0

    def _set_shadow(self, shadow: int) -> None:
        """An instruction retired: its shadow (if any) now blocks interrupts for one instruction."""
        self.vmcs.guest_interruptibility_info = (self.vmcs.guest_interruptibility_info
                                                 & ~(GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS)) | shadow

    def _apic_access_exit(self, access: int, gpa: int) -> bool:
        """An access to the APIC-access page KVM set up (virtualize APIC accesses): APIC_ACCESS with
        the page offset and the access type (SDM table 28-6), never an EPT exit."""
        kind = (TYPE_LINEAR_APIC_INST_FETCH if access == UC_MEM_FETCH_UNMAPPED
                else TYPE_LINEAR_APIC_INST_WRITE if access in (UC_MEM_WRITE_UNMAPPED, UC_MEM_WRITE_PROT)
                else TYPE_LINEAR_APIC_INST_READ)
        return self._exit(ExitReason.APIC_ACCESS, kind | (gpa & 0xFFF), self._insn_len())

    def _insn_len(self) -> int:
        """VM_EXIT_INSTRUCTION_LEN (hardware reports it on EPT misconfig in practice); remembered per
        address and mode, and forgotten with the classifications when the code changes (trap.py)."""
        if self._mode == "long64" and not self._mode_stale:   # linear_rip() and mode(), their fast path
            rip, mode = self._rc.get("rip"), "long64"
            if rip is None:
                rip = self.reg("rip")
        else:
            rip, mode = self.linear_rip(), self.mode()
        known = self._lengths.get(rip)
        if known is not None and known[0] == mode:
            return known[1]
        try:
            code = self.read_linear_bytes(rip, 15)
        except (paging.PageFault, UcError):
            return 0
        n = insn_length(code, self._cs_mode())
        self._lengths[rip] = (mode, n)
        return n

    def _cs_mode(self) -> int:
        """The capstone mode that decodes like the CPU does now."""
        return cs_mode_of(self.mode())

    def _exception(self, vector: int, error_code: int | None, qual: int = 0) -> bool:
        """A fault the guest raised natively: exit if KVM intercepts the vector, else deliver it.
        qual: a #DB's DR6 bits (B0-B3, BD, BS), the exit qualification of a #DB exit."""
        if vector in self.exception_bitmap:
            if vector == Vector.PF:
                return self._guest_pf_exit(error_code or 0)
            has = vector in EXCEPTIONS_WITH_ERROR_CODE
            return self._exit(ExitReason.EXCEPTION_NMI, qual, self._insn_len(),
                              intr=intr_info(vector, IntrType.HARD_EXCEPTION, has), err=error_code or 0)
        self.native_exceptions += 1
        code = (error_code or 0) if vector in EXCEPTIONS_WITH_ERROR_CODE else None
        cr2 = self.cr(2) if vector == Vector.PF else None
        return self._deliver(vector, IntrType.HARD_EXCEPTION, code, cr2=cr2, inst_len=0, native=True)

    def _deliver(self, vector: int, itype: IntrType, error_code: int | None, cr2: int | None,
                 inst_len: int, native: bool = False) -> bool:
        """Deliver an event; True when that ended in a triple-fault VM exit.  native: raised by
        the CPU itself, not injected at VM entry (event.deliver's RF rule)."""
        if itype == IntrType.NMI_INTR:
            self.vmcs.guest_interruptibility_info |= GUEST_INTR_STATE_NMI   # blocked until IRET
        elif vector == Vector.DB:
            self.vmcs.guest_dr7 &= ~ctrlregs.DR7_GD     # the CPU lets the #DB handler use the debug registers
        next_rip = self.reg("rip") + inst_len if inst_len else None
        try:
            event.deliver(self, vector, itype, error_code, next_rip=next_rip, cr2=cr2, native=native)
        except event.TripleFault:
            return self._exit(ExitReason.TRIPLE_FAULT)
        except event.TaskGate as gate:
            return self._task_gate_exit(gate, inst_len)
        return False

    def _task_gate_exit(self, gate: event.TaskGate, inst_len: int) -> bool:
        """TASK_SWITCH through an IDT task gate: the event being delivered goes in the IDT-vectoring
        fields (with the instruction length of a software event), the switch is KVM's."""
        soft = gate.itype in (IntrType.SOFT_INTR, IntrType.SOFT_EXCEPTION, IntrType.PRIV_SW_EXCEPTION)
        self._exit(ExitReason.TASK_SWITCH, gate.tss_selector | taskswitch.TASK_SWITCH_GATE << 30,
                   inst_len if soft else 0)
        has_error = gate.error_code is not None
        self.vmcs.idt_vectoring_info_field = intr_info(gate.vector, gate.itype, has_error)
        self.vmcs.idt_vectoring_error_code = gate.error_code or 0
        return True

    def _far_selector(self, dec: _Decoded) -> int | None:
        """The selector a CALL/JMP far goes to: ptr16:16/32's last two bytes, or the word after the
        offset of its m16:16/32 operand (None if reading it faults: the CPU then takes that fault)."""
        code, i, op16 = dec.code, 0, not self._default_op32()
        while i < len(code) - 1 and code[i] in (0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3):
            op16 ^= code[i] == 0x66
            i += 1
        if code[i] in (0x9A, 0xEA):
            return int.from_bytes(code[dec.length - 2:dec.length], "little")
        try:
            found = self._mem_operand(self.linear_rip(), code)
            return None if found is None else self.read_linear(found[0] + (2 if op16 else 4), 2)
        except (event.DeliveryFault, paging.PageFault, UcError):
            return None

    def _far_transfer(self, dec: _Decoded) -> bool:
        """CALL/JMP far: a task switch exits (taskswitch.py); any other far transfer runs natively."""
        sel = self._far_selector(dec) if taskswitch.switches_tasks(self.mode()) else None
        if sel is None:
            return self._run_natively(dec)
        reason = taskswitch.TASK_SWITCH_CALL if "call" in dec.mnemonic else taskswitch.TASK_SWITCH_JMP
        return self._task_decision(taskswitch.far_transfer(self, sel), reason, dec)

    def _task_decision(self, d: tuple, reason: int, dec: _Decoded) -> bool:
        if d[0] == "native":
            return self._run_natively(dec)
        if d[0] == "fault":
            return self._exception(d[1], d[2])
        return self._exit(ExitReason.TASK_SWITCH, d[1] | reason << 30, dec.length)

    def _on_unmapped_raw(self, uch: object, access: int, addr: int, size: int, value: int, _: object) -> bool:
        # The first access is the one silicon stops on.  A QEMU helper doing several stores
        # (FXSAVE, XSAVE, FNSAVE) calls this once per store and goes on (hw/fixups.py stops
        # those instructions before they run); the ordinary TCG store stops after one call.
        if self._pending is None:
            self._pending = ("mem", access, addr, size)
        return False

    def _on_intr(self, uc: Uc, intno: int, _: object) -> None:
        self._pending = ("intr", intno, quirks.error_code(uc))
        uc.emu_stop()

    def _on_rdtsc_raw(self, uch: object, key: object) -> int:
        """RDTSC: the TSC is the instructions retired so far (the count hook has seen this one),
        plus TSC_OFFSET; EDX:EAX, upper halves zero.  1: unicorn skips its own host-clock value."""
        now = self.guest_insns + (max(self._counter.value - 1, 0) if self._counting else 0)
        tsc = (now + self.vmcs.tsc_offset) & ((1 << 64) - 1)
        self.uc.reg_write(UC_X86_REG_RAX, tsc & 0xFFFF_FFFF)
        self.uc.reg_write(UC_X86_REG_RDX, tsc >> 32)
        return 1

    def _on_rdtscp_raw(self, uch: object, key: object) -> int:
        """RDTSCP: RDTSC's EDX:EAX, and ECX = IA32_TSC_AUX[31:0] (unicorn's would be the host clock)."""
        self._on_rdtsc_raw(uch, key)
        self.uc.reg_write(UC_X86_REG_RCX, self.uc.msr_read(MSR_TSC_AUX) & 0xFFFF_FFFF)
        return 1

    def request_stop(self) -> None:
        """A signal to the vCPU thread: kick the guest out (like an IPI), from any thread."""
        self.kick_pending = True
        self._between = True
        if self.uc is not None:
            self.uc.emu_stop()
