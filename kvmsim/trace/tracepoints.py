"""The kvm tracepoints of arch/x86/kvm/trace.h and include/trace/events/kvm.h: fields and TP_printk text.

One declarative table: each event's fields in TP_STRUCT__entry order, a printer that gives
the text the kernel's TP_printk gives for those fields, and a regex that reads the text
back into fields (trace-cmd style text round-trips; tracefs lines of the real host parse
the same way).  The printed form follows the host kernel here (6.18: kvm_entry carries
intr_info/error_code, kvm_exit a `requests` mask); older kernels print a prefix of it.

    text = format_event("kvm_pio", {"rw": 1, "port": 0x3f8, "size": 1, "count": 1, "val": 0x41})
    fields = parse_event("kvm_pio", text)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from kvmsim.hw.vmcs import ExitReason

KVM_ISA_VMX, KVM_ISA_SVM = 1, 2
FAILED_VMENTRY = 0x8000_0000

# VMX_EXIT_REASONS as the 6.18 trace.h prints them (uapi vmx.h names; OTHER_SMI and SEAMCALL are not listed).
VMX_EXIT_NAMES: dict[int, str] = {e.value: e.name for e in ExitReason if e.value not in (6, 76)}
VMX_EXIT_NUMBERS = {v: k for k, v in VMX_EXIT_NAMES.items()}

# KVM_EXIT_* names kvm_userspace_exit knows (kvm_trace_exit_reason: up to X86_WRMSR).
_KVM_EXITS = ("UNKNOWN EXCEPTION IO HYPERCALL DEBUG HLT MMIO IRQ_WINDOW_OPEN SHUTDOWN FAIL_ENTRY INTR "
              "SET_TPR TPR_ACCESS S390_SIEIC S390_RESET DCR NMI INTERNAL_ERROR OSI PAPR_HCALL S390_UCONTROL "
              "WATCHDOG S390_TSCH EPR SYSTEM_EVENT S390_STSI IOAPIC_EOI HYPERV ARM_NISV X86_RDMSR X86_WRMSR").split()
KVM_EXIT_NAMES = {i: f"KVM_EXIT_{n}" for i, n in enumerate(_KVM_EXITS)}
KVM_EXIT_NUMBERS = {v: k for k, v in KVM_EXIT_NAMES.items()}
EINTR = 4

EXCEPTION_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF", 10: "#TS",
                   11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM",
                   20: "#VE", 21: "#CP", 28: "#HV", 29: "#VC", 30: "#SX"}
EXCEPTION_NUMBERS = {v: k for k, v in EXCEPTION_NAMES.items()}

# kvm_emulate_insn flags: X86EMUL_MODE_* as trace.h's kvm_trace_symbol_emul_flags names them.
EMUL_MODES = {0: "real", 3: "vm16", 1: "prot16", 5: "prot32", 9: "prot64"}
EMUL_MODE_NUMBERS = {v: k for k, v in EMUL_MODES.items()}
MMIO_TYPES = {0: "unsatisfied-read", 1: "read", 2: "write"}
MMIO_TYPE_NUMBERS = {v: k for k, v in MMIO_TYPES.items()}

# KVM_REQ_* bit numbers (include/linux/kvm_host.h, arch/x86/include/asm/kvm_host.h) for kvm_exit's requests.
KVM_REQ_BITS = {"KVM_REQ_TLB_FLUSH": 0, "KVM_REQ_VM_DEAD": 1, "KVM_REQ_UNBLOCK": 2, "KVM_REQ_DIRTY_RING_SOFT_FULL": 3,
                "KVM_REQ_MIGRATE_TIMER": 8, "KVM_REQ_REPORT_TPR_ACCESS": 9, "KVM_REQ_TRIPLE_FAULT": 10,
                "KVM_REQ_MMU_SYNC": 11, "KVM_REQ_CLOCK_UPDATE": 12, "KVM_REQ_LOAD_MMU_PGD": 13,
                "KVM_REQ_EVENT": 14, "KVM_REQ_APF_HALT": 15, "KVM_REQ_STEAL_UPDATE": 16, "KVM_REQ_NMI": 17,
                "KVM_REQ_PMU": 18, "KVM_REQ_PMI": 19, "KVM_REQ_SMI": 20}


def _sym(table: dict[int, str], value: int) -> str:
    """__print_symbolic: the name, else the value in hex."""
    return table.get(value) or f"0x{value:x}"


def _unsym(table: dict[str, int], text: str) -> int:
    return table[text] if text in table else int(text, 16)


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


# ---------------------------------------------------------------- printers (TP_printk)

def _p_entry(f: dict) -> str:
    return (f"vcpu {f['vcpu_id']}, rip 0x{f['rip']:x} intr_info 0x{f.get('intr_info', 0):08x} "
            f"error_code 0x{f.get('error_code', 0):08x}{'[immediate exit]' if f.get('immediate_exit') else ''}")


def _p_exit(f: dict) -> str:
    return (f"vcpu {f['vcpu_id']} reason {exit_reason_text(f['exit_reason'], f.get('isa', KVM_ISA_VMX))} "
            f"rip 0x{f['guest_rip']:x} info1 0x{f['info1']:016x} info2 0x{f['info2']:016x} "
            f"intr_info 0x{f['intr_info']:08x} error_code 0x{f['error_code']:08x} "
            f"requests 0x{requests_mask(f.get('requests', 0)):016x}")


def _p_emulate(f: dict) -> str:
    insn = _insn_bytes(f)
    return (f"{f['csbase']:x}:{f['rip']:x}:{' '.join(f'{b:02x}' for b in insn)} "
            f"({_sym(EMUL_MODES, _mode(f['flags']))}){' failed' if f.get('failed') else ''}")


def _p_pio(f: dict) -> str:
    return (f"pio_{'write' if f['rw'] else 'read'} at 0x{f['port']:x} size {f['size']} count {f['count']} "
            f"val 0x{f['val']:x} {'(...)' if f['count'] > 1 else ''}")


def _p_userspace_exit(f: dict) -> str:
    errno = f["errno"]
    if errno < 0:
        return f"reason {'restart' if errno == -EINTR else 'error'} ({-errno})"
    return f"reason {_sym(KVM_EXIT_NAMES, f['reason'])} ({f['reason']})"


def _p_inj_exception(f: dict) -> str:
    return (_sym(EXCEPTION_NAMES, f["exception"]) + (f" (0x{f['error_code']:x})" if f["has_error"] else "")
            + (" [reinjected]" if f.get("reinjected") else ""))


_PRINTERS: dict[str, Callable[[dict], str]] = {
    "kvm_entry": _p_entry,
    "kvm_exit": _p_exit,
    "kvm_nested_vmexit": _p_exit,
    "kvm_emulate_insn": _p_emulate,
    "kvm_pio": _p_pio,
    "kvm_fast_mmio": lambda f: f"fast mmio at gpa 0x{f['gpa']:x}",
    "kvm_mmio": lambda f: (f"mmio {_sym(MMIO_TYPES, f['type'])} len {f['len']} gpa 0x{f['gpa']:x} "
                           f"val 0x{f['val']:x}"),
    "kvm_userspace_exit": _p_userspace_exit,
    "kvm_inj_exception": _p_inj_exception,
    "kvm_inj_virq": lambda f: (f"{'Soft/INTn' if f['soft'] else 'IRQ'} 0x{f['vector']:x}"
                               f"{' [reinjected]' if f.get('reinjected') else ''}"),
    "kvm_cpuid": lambda f: (f"func {f['function']:x} idx {f['index']:x} rax {f['rax']:x} rbx {f['rbx']:x} "
                            f"rcx {f['rcx']:x} rdx {f['rdx']:x}, cpuid entry {'found' if f['found'] else 'not found'}"
                            f"{', used max basic' if f.get('used_max_basic') else ''}"),
    "kvm_msr": lambda f: (f"msr_{'write' if f['write'] else 'read'} {f['ecx']:x} = 0x{f['data']:x}"
                          f"{' (#GP)' if f['exception'] else ''}"),
    "kvm_cr": lambda f: f"cr_{'write' if f['rw'] else 'read'} {f['cr']:x} = 0x{f['val']:x}",
    "kvm_hypercall": lambda f: (f"nr 0x{f['nr']:x} a0 0x{f['a0']:x} a1 0x{f['a1']:x} a2 0x{f['a2']:x} "
                                f"a3 0x{f['a3']:x}"),
    "kvm_page_fault": lambda f: (f"vcpu {f['vcpu_id']} rip 0x{f['guest_rip']:x} address 0x{f['fault_address']:016x} "
                                 f"error_code 0x{f['error_code']:x}"),
}


def _mode(flags: Any) -> int:
    return EMUL_MODE_NUMBERS.get(flags, 0) if isinstance(flags, str) else int(flags)


def _insn_bytes(f: dict) -> bytes:
    insn = f["insn"]
    insn = bytes.fromhex(insn) if isinstance(insn, str) else bytes(insn)
    return insn[:f.get("len", len(insn))]


# ---------------------------------------------------------------- parsers (the printed text back to fields)

_HEX = "[0-9a-f]+"
_PARSERS: dict[str, re.Pattern[str]] = {
    "kvm_entry": re.compile(rf"vcpu (?P<vcpu_id>\d+), rip 0x(?P<rip>{_HEX})(?: intr_info 0x(?P<intr_info>{_HEX}) "
                            rf"error_code 0x(?P<error_code>{_HEX}))?\s?(?P<immediate_exit>\[immediate exit\])?$"),
    "kvm_exit": re.compile(rf"vcpu (?P<vcpu_id>\d+) reason (?P<reason>\S+)(?P<failed> FAILED_VMENTRY)? "
                           rf"rip 0x(?P<guest_rip>{_HEX}) info1 0x(?P<info1>{_HEX}) info2 0x(?P<info2>{_HEX}) "
                           rf"intr_info 0x(?P<intr_info>{_HEX}) error_code 0x(?P<error_code>{_HEX})"
                           rf"(?: requests 0x(?P<requests>{_HEX}))?$"),
    "kvm_emulate_insn": re.compile(rf"(?P<csbase>{_HEX}):(?P<rip>{_HEX}):(?P<insn>(?:{_HEX}(?: {_HEX})*)?) "
                                   r"\((?P<flags>\w+)\)(?P<failed> failed)?$"),
    "kvm_pio": re.compile(rf"pio_(?P<rw>read|write) at 0x(?P<port>{_HEX}) size (?P<size>\d+) count (?P<count>\d+) "
                          rf"val 0x(?P<val>{_HEX}) ?(?:\(\.\.\.\))?$"),
    "kvm_fast_mmio": re.compile(rf"fast mmio at gpa 0x(?P<gpa>{_HEX})$"),
    "kvm_mmio": re.compile(rf"mmio (?P<type>[\w-]+) len (?P<len>\d+) gpa 0x(?P<gpa>{_HEX}) val 0x(?P<val>{_HEX})$"),
    "kvm_userspace_exit": re.compile(r"reason (?P<reason>\S+) \((?P<errno>-?\d+)\)$"),
    "kvm_inj_exception": re.compile(rf"(?P<exception>#\w+|0x{_HEX})(?: \(0x(?P<error_code>{_HEX})\))?"
                                    r"(?P<reinjected> \[reinjected\])?$"),
    "kvm_inj_virq": re.compile(rf"(?P<soft>Soft/INTn|IRQ) 0x(?P<vector>{_HEX})(?P<reinjected> \[reinjected\])?$"),
    "kvm_cpuid": re.compile(rf"func (?P<function>{_HEX}) idx (?P<index>{_HEX}) rax (?P<rax>{_HEX}) rbx (?P<rbx>{_HEX}) "
                            rf"rcx (?P<rcx>{_HEX}) rdx (?P<rdx>{_HEX}), cpuid entry (?P<found>found|not found)"
                            r"(?P<used_max_basic>, used max basic)?$"),
    "kvm_msr": re.compile(rf"msr_(?P<write>read|write) (?P<ecx>{_HEX}) = 0x(?P<data>{_HEX})(?P<exception> \(#GP\))?$"),
    "kvm_cr": re.compile(rf"cr_(?P<rw>read|write) (?P<cr>{_HEX}) = 0x(?P<val>{_HEX})$"),
    "kvm_hypercall": re.compile(rf"nr 0x(?P<nr>{_HEX}) a0 0x(?P<a0>{_HEX}) a1 0x(?P<a1>{_HEX}) a2 0x(?P<a2>{_HEX}) "
                                rf"a3 0x(?P<a3>{_HEX})$"),
    "kvm_page_fault": re.compile(rf"vcpu (?P<vcpu_id>\d+) rip 0x(?P<guest_rip>{_HEX}) address 0x(?P<fault_address>{_HEX}) "
                                 rf"error_code 0x(?P<error_code>{_HEX})$"),
}
_PARSERS["kvm_nested_vmexit"] = _PARSERS["kvm_exit"]
_DEC = {"vcpu_id", "size", "count", "len", "errno"}
_FLAGS = {"immediate_exit", "failed", "reinjected", "used_max_basic", "exception_gp"}


def _convert(event: str, raw: dict[str, str | None]) -> dict[str, Any]:
    """Regex groups → the event's fields (numbers as numbers, symbols back to their values)."""
    f: dict[str, Any] = {}
    for k, v in raw.items():
        if k in _FLAGS or (k == "exception" and event == "kvm_msr"):
            f[k] = v is not None
        elif v is None:
            continue
        elif k in _DEC:
            f[k] = int(v)
        elif k in ("rw", "write"):
            f[k] = int(v == "write")
        elif k == "soft":
            f[k] = v != "IRQ"
        elif k == "found":
            f[k] = v == "found"
        elif k == "type":
            f[k] = _unsym(MMIO_TYPE_NUMBERS, v)
        elif k == "flags":
            f[k] = _unsym(EMUL_MODE_NUMBERS, v)
        elif k == "insn":
            f[k] = bytes.fromhex(v.replace(" ", ""))
        elif k == "exception":
            f[k] = _unsym(EXCEPTION_NUMBERS, v)
        elif k == "reason" and event in ("kvm_exit", "kvm_nested_vmexit"):
            f["exit_reason"] = _unsym(VMX_EXIT_NUMBERS, v) | (FAILED_VMENTRY if raw.get("failed") else 0)
        elif k == "reason":
            f[k] = v
        else:
            f[k] = int(v, 16)
    if event in ("kvm_exit", "kvm_nested_vmexit"):
        f.pop("failed", None)
        f["isa"] = KVM_ISA_VMX
    elif event == "kvm_emulate_insn":
        f["len"] = len(f["insn"])
    elif event == "kvm_inj_exception":
        f["has_error"] = "error_code" in f
        f.setdefault("error_code", 0)
    elif event == "kvm_userspace_exit":
        name, n = f.pop("reason"), f.pop("errno")
        f["errno"], f["reason"] = (-n, None) if name in ("restart", "error") else (0, KVM_EXIT_NUMBERS.get(name, n))
    return f


@dataclass(frozen=True)
class Tracepoint:
    """One TRACE_EVENT: its system, fields in TP_STRUCT__entry order."""

    name: str
    system: str
    fields: tuple[str, ...]


TRACEPOINTS: dict[str, Tracepoint] = {tp.name: tp for tp in (
    Tracepoint("kvm_entry", "kvm", ("vcpu_id", "rip", "immediate_exit", "intr_info", "error_code")),
    Tracepoint("kvm_exit", "kvm", ("exit_reason", "guest_rip", "isa", "info1", "info2", "intr_info", "error_code",
                                   "vcpu_id", "requests")),
    Tracepoint("kvm_nested_vmexit", "kvm", ("exit_reason", "guest_rip", "isa", "info1", "info2", "intr_info",
                                            "error_code", "vcpu_id", "requests")),
    Tracepoint("kvm_emulate_insn", "kvm", ("rip", "csbase", "len", "insn", "flags", "failed")),
    Tracepoint("kvm_pio", "kvm", ("rw", "port", "size", "count", "val")),
    Tracepoint("kvm_fast_mmio", "kvm", ("gpa",)),
    Tracepoint("kvm_mmio", "kvm", ("type", "len", "gpa", "val")),
    Tracepoint("kvm_userspace_exit", "kvm", ("reason", "errno")),
    Tracepoint("kvm_inj_exception", "kvm", ("exception", "has_error", "error_code", "reinjected")),
    Tracepoint("kvm_inj_virq", "kvm", ("vector", "soft", "reinjected")),
    Tracepoint("kvm_cpuid", "kvm", ("function", "index", "rax", "rbx", "rcx", "rdx", "found", "used_max_basic")),
    Tracepoint("kvm_msr", "kvm", ("write", "ecx", "data", "exception")),
    Tracepoint("kvm_cr", "kvm", ("rw", "cr", "val")),
    Tracepoint("kvm_hypercall", "kvm", ("nr", "a0", "a1", "a2", "a3")),
    Tracepoint("kvm_page_fault", "kvm", ("vcpu_id", "guest_rip", "fault_address", "error_code")),
)}


def format_event(name: str, fields: dict[str, Any]) -> str:
    """The TP_printk text of one event; an event we have no printer for shows its fields as key=value."""
    printer = _PRINTERS.get(name)
    if printer is not None:
        try:
            return printer(fields)
        except (KeyError, TypeError, ValueError):
            pass   # a field missing from the emitter: fall back rather than lose the event
    return " ".join(f"{k}={_plain(v)}" for k, v in fields.items() if k != "text")


def parse_event(name: str, text: str) -> dict[str, Any] | None:
    """Fields back from a tracepoint's text, or None if it is not in the event's printed form."""
    pat = _PARSERS.get(name)
    m = pat.match(text) if pat is not None else None
    if m is None:
        if pat is None and text:
            return dict(_kv(p) for p in text.split(" ") if "=" in p)
        return None
    return _convert(name, m.groupdict())


def normalise(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """An emitter's fields in the kernel's representation (what parse_event gives back for its text)."""
    text = format_event(name, fields)
    return parse_event(name, text) or {}


def _plain(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return f"0x{v:x}"
    return str(v).replace(" ", "_")


def _kv(part: str) -> tuple[str, Any]:
    k, v = part.split("=", 1)
    try:
        return k, int(v, 0)
    except ValueError:
        return k, v
