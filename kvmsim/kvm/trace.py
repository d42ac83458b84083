"""Model of arch/x86/kvm/trace.h (and include/trace/events/kvm.h): the kvm tracepoints, defined once.

`TRACE_EVENTS` is the TRACE_EVENT list: each event's fields in TP_STRUCT__entry order and its
TP_printk printer.  Emitters in kvm/ pass the fields only (`tracepoint("kvm_pio", rw=..., ...)`);
whoever needs text (trace/ reports, debug/ views) calls `format_event` here, the one renderer.
The printed form follows the host kernel (6.18: kvm_entry carries intr_info/error_code,
kvm_exit a `requests` mask); older kernels print a prefix of it.

The trace clock: ftrace stamps events with the host's clock; here it is the running vCPU's
retired guest instructions (`install_trace_clock`), so a run's trace times are reproducible.

    text = format_event("kvm_pio", {"rw": 1, "port": 0x3f8, "size": 1, "count": 1, "val": 0x41})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kvmsim.hw.vmcs import ExitReason
from kvmsim.probe import PROBES, no_clock
from kvmsim.uapi import KvmExit

KVM_ISA_VMX, KVM_ISA_SVM = 1, 2
FAILED_VMENTRY = 0x8000_0000
EINTR = 4

# VMX_EXIT_REASONS as the 6.18 trace.h prints them (uapi vmx.h names; OTHER_SMI and SEAMCALL are not listed).
VMX_EXIT_NAMES: dict[int, str] = {e.value: e.name for e in ExitReason if e.value not in (6, 76)}

# kvm_trace_exit_reason: the KVM_EXIT_* names kvm_userspace_exit knows (up to X86_WRMSR).
KVM_EXIT_NAMES: dict[int, str] = {e.value: e.kname for e in KvmExit if e.value <= KvmExit.X86_WRMSR}

# kvm_trace_sym_exc
EXCEPTION_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF", 10: "#TS",
                   11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM",
                   20: "#VE", 21: "#CP", 28: "#HV", 29: "#VC", 30: "#SX"}

# kvm_emulate_insn flags: X86EMUL_MODE_* as trace.h's kvm_trace_symbol_emul_flags names them.
EMUL_MODES = {0: "real", 3: "vm16", 1: "prot16", 5: "prot32", 9: "prot64"}
EMUL_MODE_NUMBERS = {v: k for k, v in EMUL_MODES.items()}
MMIO_TYPES = {0: "unsatisfied-read", 1: "read", 2: "write"}   # KVM_TRACE_MMIO_*

# KVM_REQ_* bit numbers (include/linux/kvm_host.h, arch/x86/include/asm/kvm_host.h) for kvm_exit's requests.
KVM_REQ_BITS = {"KVM_REQ_TLB_FLUSH": 0, "KVM_REQ_VM_DEAD": 1, "KVM_REQ_UNBLOCK": 2, "KVM_REQ_DIRTY_RING_SOFT_FULL": 3,
                "KVM_REQ_MIGRATE_TIMER": 8, "KVM_REQ_REPORT_TPR_ACCESS": 9, "KVM_REQ_TRIPLE_FAULT": 10,
                "KVM_REQ_MMU_SYNC": 11, "KVM_REQ_CLOCK_UPDATE": 12, "KVM_REQ_LOAD_MMU_PGD": 13,
                "KVM_REQ_EVENT": 14, "KVM_REQ_APF_HALT": 15, "KVM_REQ_STEAL_UPDATE": 16, "KVM_REQ_NMI": 17,
                "KVM_REQ_PMU": 18, "KVM_REQ_PMI": 19, "KVM_REQ_SMI": 20}


def _sym(table: dict[int, str], value: int) -> str:
    """__print_symbolic: the name, else the value in hex."""
    return table.get(value) or f"0x{value:x}"


def requests_mask(requests: Any) -> int:
    """The model keeps vcpu->requests as a set of names; the tracepoint shows the bit mask."""
    if isinstance(requests, int):
        return requests
    return sum(1 << KVM_REQ_BITS[r] for r in requests or () if r in KVM_REQ_BITS)


def exit_reason_text(exit_reason: int, isa: int = KVM_ISA_VMX) -> str:
    """kvm_exit's `reason %s%s%s`: the basic reason's name, then ` FAILED_VMENTRY` for bit 31."""
    if isa != KVM_ISA_VMX:
        return _sym({}, exit_reason)
    name = _sym(VMX_EXIT_NAMES, exit_reason & 0xFFFF)
    return name + (" FAILED_VMENTRY" if exit_reason & FAILED_VMENTRY else "")


def emul_mode(flags: Any) -> int:
    """kvm_emulate_insn's flags as a number (the model's emitter passes the mode's name)."""
    return EMUL_MODE_NUMBERS.get(flags, 0) if isinstance(flags, str) else int(flags)


def insn_bytes(f: dict) -> bytes:
    """kvm_emulate_insn's insn field (hex text or bytes), cut to its len."""
    insn = f["insn"]
    insn = bytes.fromhex(insn) if isinstance(insn, str) else bytes(insn)
    return insn[:f.get("len", len(insn))]


# ---------------------------------------------------------------- TP_printk, one per event

def _p_entry(f: dict) -> str:
    return (f"vcpu {f['vcpu_id']}, rip 0x{f['rip']:x} intr_info 0x{f.get('intr_info', 0):08x} "
            f"error_code 0x{f.get('error_code', 0):08x}{'[immediate exit]' if f.get('immediate_exit') else ''}")


def _p_exit(f: dict) -> str:
    return (f"vcpu {f['vcpu_id']} reason {exit_reason_text(f['exit_reason'], f.get('isa', KVM_ISA_VMX))} "
            f"rip 0x{f['guest_rip']:x} info1 0x{f['info1']:016x} info2 0x{f['info2']:016x} "
            f"intr_info 0x{f['intr_info']:08x} error_code 0x{f['error_code']:08x} "
            f"requests 0x{requests_mask(f.get('requests', 0)):016x}")


def _p_emulate_insn(f: dict) -> str:
    return (f"{f['csbase']:x}:{f['rip']:x}:{' '.join(f'{b:02x}' for b in insn_bytes(f))} "
            f"({_sym(EMUL_MODES, emul_mode(f['flags']))}){' failed' if f.get('failed') else ''}")


def _p_pio(f: dict) -> str:
    return (f"pio_{'write' if f['rw'] else 'read'} at 0x{f['port']:x} size {f['size']} count {f['count']} "
            f"val 0x{f['val']:x} {'(...)' if f['count'] > 1 else ''}")


def _p_fast_mmio(f: dict) -> str:
    return f"fast mmio at gpa 0x{f['gpa']:x}"


def _p_mmio(f: dict) -> str:
    return f"mmio {_sym(MMIO_TYPES, f['type'])} len {f['len']} gpa 0x{f['gpa']:x} val 0x{f['val']:x}"


def _p_userspace_exit(f: dict) -> str:
    errno = f["errno"]
    if errno < 0:
        return f"reason {'restart' if errno == -EINTR else 'error'} ({-errno})"
    return f"reason {_sym(KVM_EXIT_NAMES, f['reason'])} ({f['reason']})"


def _p_inj_exception(f: dict) -> str:
    return (_sym(EXCEPTION_NAMES, f["exception"]) + (f" (0x{f['error_code']:x})" if f["has_error"] else "")
            + (" [reinjected]" if f.get("reinjected") else ""))


def _p_inj_virq(f: dict) -> str:
    return f"{'Soft/INTn' if f['soft'] else 'IRQ'} 0x{f['vector']:x}{' [reinjected]' if f.get('reinjected') else ''}"


def _p_cpuid(f: dict) -> str:
    return (f"func {f['function']:x} idx {f['index']:x} rax {f['rax']:x} rbx {f['rbx']:x} rcx {f['rcx']:x} "
            f"rdx {f['rdx']:x}, cpuid entry {'found' if f['found'] else 'not found'}"
            f"{', used max basic' if f.get('used_max_basic') else ''}")


def _p_msr(f: dict) -> str:
    return f"msr_{'write' if f['write'] else 'read'} {f['ecx']:x} = 0x{f['data']:x}{' (#GP)' if f['exception'] else ''}"


def _p_cr(f: dict) -> str:
    return f"cr_{'write' if f['rw'] else 'read'} {f['cr']:x} = 0x{f['val']:x}"


def _p_hypercall(f: dict) -> str:
    return f"nr 0x{f['nr']:x} a0 0x{f['a0']:x} a1 0x{f['a1']:x} a2 0x{f['a2']:x} a3 0x{f['a3']:x}"


def _p_apic(f: dict) -> str:
    return f"apic_{'write' if f['rw'] else 'read'} 0x{f['reg']:x} = 0x{f['val']:x}"


def _p_eoi(f: dict) -> str:
    return f"apicid {f['apicid']:x} vector {f['vector']}"


def _p_apic_ipi(f: dict) -> str:
    return f"dst {f['dest_id']:x} vec {f['icr_low'] & 0xff} icr_low 0x{f['icr_low']:x}"


def _p_pic_set_irq(f: dict) -> str:
    bit = 1 << f["pin"]
    return (f"chip {f['chip']} pin {f['pin']} ({'level' if f['elcr'] & bit else 'edge'}"
            f"{'|masked' if f['imr'] & bit else ''}){' (coalesced)' if f['coalesced'] else ''}")


def _p_page_fault(f: dict) -> str:
    return (f"vcpu {f['vcpu_id']} rip 0x{f['guest_rip']:x} address 0x{f['fault_address']:016x} "
            f"error_code 0x{f['error_code']:x}")


def _p_handle_mmio_page_fault(f: dict) -> str:     # mmutrace.h
    return f"addr:{f['addr']:x} gfn {f['gfn']:x} access {f['access']:x}"
def _p_ple_window_update(f: dict) -> str:
    return (f"vcpu {f['vcpu_id']} old {f['old']} new {f['new']} "
            f"({'growed' if f['old'] < f['new'] else 'shrinked'})")


def _p_pml_full(f: dict) -> str:
    return f"vcpu {f['vcpu_id']}: PML full"


# ---------------------------------------------------------------- the TRACE_EVENT table

@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One TRACE_EVENT: its system, its fields (TP_STRUCT__entry order), its TP_printk."""

    name: str
    system: str
    fields: tuple[str, ...]
    printk: Callable[[dict], str]


_EXIT_FIELDS = ("exit_reason", "guest_rip", "isa", "info1", "info2", "intr_info", "error_code", "vcpu_id", "requests")

TRACE_EVENTS: dict[str, TraceEvent] = {e.name: e for e in (
    TraceEvent("kvm_entry",          "kvm", ("vcpu_id", "rip", "immediate_exit", "intr_info", "error_code"), _p_entry),
    TraceEvent("kvm_exit",           "kvm", _EXIT_FIELDS, _p_exit),
    TraceEvent("kvm_nested_vmexit",  "kvm", _EXIT_FIELDS, _p_exit),
    TraceEvent("kvm_emulate_insn",   "kvm", ("rip", "csbase", "len", "insn", "flags", "failed"), _p_emulate_insn),
    TraceEvent("kvm_pio",            "kvm", ("rw", "port", "size", "count", "val"), _p_pio),
    TraceEvent("kvm_fast_mmio",      "kvm", ("gpa",), _p_fast_mmio),
    TraceEvent("kvm_mmio",           "kvm", ("type", "len", "gpa", "val"), _p_mmio),
    TraceEvent("kvm_userspace_exit", "kvm", ("reason", "errno"), _p_userspace_exit),
    TraceEvent("kvm_inj_exception",  "kvm", ("exception", "has_error", "error_code", "reinjected"), _p_inj_exception),
    TraceEvent("kvm_inj_virq",       "kvm", ("vector", "soft", "reinjected"), _p_inj_virq),
    TraceEvent("kvm_cpuid",          "kvm", ("function", "index", "rax", "rbx", "rcx", "rdx", "found",
                                             "used_max_basic"), _p_cpuid),
    TraceEvent("kvm_msr",            "kvm", ("write", "ecx", "data", "exception"), _p_msr),
    TraceEvent("kvm_cr",             "kvm", ("rw", "cr", "val"), _p_cr),
    TraceEvent("kvm_hypercall",      "kvm", ("nr", "a0", "a1", "a2", "a3"), _p_hypercall),
    TraceEvent("kvm_page_fault",     "kvm", ("vcpu_id", "guest_rip", "fault_address", "error_code"), _p_page_fault),
    TraceEvent("kvm_apic",           "kvm", ("rw", "reg", "val"), _p_apic),
    TraceEvent("kvm_eoi",            "kvm", ("apicid", "vector"), _p_eoi),
    TraceEvent("kvm_apic_ipi",       "kvm", ("icr_low", "dest_id"), _p_apic_ipi),
    TraceEvent("kvm_pic_set_irq",    "kvm", ("chip", "pin", "elcr", "imr", "coalesced"), _p_pic_set_irq),
    TraceEvent("handle_mmio_page_fault", "kvmmmu", ("addr", "gfn", "access"), _p_handle_mmio_page_fault),
    TraceEvent("kvm_ple_window_update", "kvm", ("vcpu_id", "new", "old"), _p_ple_window_update),
    TraceEvent("kvm_pml_full",       "kvm", ("vcpu_id",), _p_pml_full),
)}


def format_event(name: str, fields: dict[str, Any]) -> str:
    """The TP_printk text of one event; an event we have no printer for shows its fields as key=value."""
    event = TRACE_EVENTS.get(name)
    if event is not None:
        try:
            return event.printk(fields)
        except (KeyError, TypeError, ValueError):
            pass   # a field missing from the emitter: fall back rather than lose the event
    return " ".join(f"{k}={_plain(v)}" for k, v in fields.items())


def _plain(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return f"0x{v:x}"
    return str(v).replace(" ", "_")


# ---------------------------------------------------------------- the trace clock

def install_trace_clock(hw: Any) -> None:
    """This vCPU's silicon is the one that runs from now on (kvm_running_vcpu, simplified: one
    vCPU runs at a time here, the one created last): probe events are stamped with its retired
    guest instructions (hw counts them while an instruction budget is set, which a scenario has
    unless limits.max_guest_insns is null)."""

    def retired_insns() -> int:     # a closure: the cheapest call, once per event while tracing
        return hw.guest_insns

    retired_insns.hw = hw   # type: ignore[attr-defined]
    PROBES.clock = retired_insns


def remove_trace_clock(hw: Any) -> None:
    """The vCPU is gone: events no longer read its counter (another vCPU's clock stays)."""
    if getattr(PROBES.clock, "hw", None) is hw:
        PROBES.clock = no_clock
