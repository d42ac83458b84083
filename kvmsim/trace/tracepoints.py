"""The kvm tracepoints' text read back into fields: what libtraceevent does with a TP_printk line.

kvm/trace.py defines the events (fields, TP_printk) and prints them; this reads the printed
form back (trace-cmd style text round-trips; tracefs lines of the real host parse the same way).

    fields = parse_event("kvm_pio", "pio_write at 0x3f8 size 1 count 1 val 0x41 ")
"""

from __future__ import annotations

import re
from typing import Any

from kvmsim.kvm.trace import (EMUL_MODE_NUMBERS, EXCEPTION_NAMES, FAILED_VMENTRY, KVM_EXIT_NAMES, KVM_ISA_VMX,
                              MMIO_TYPES, VMX_EXIT_NAMES, format_event)

VMX_EXIT_NUMBERS = {v: k for k, v in VMX_EXIT_NAMES.items()}
KVM_EXIT_NUMBERS = {v: k for k, v in KVM_EXIT_NAMES.items()}
EXCEPTION_NUMBERS = {v: k for k, v in EXCEPTION_NAMES.items()}
MMIO_TYPE_NUMBERS = {v: k for k, v in MMIO_TYPES.items()}


def _unsym(table: dict[str, int], text: str) -> int:
    return table[text] if text in table else int(text, 16)


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
    "kvm_apic": re.compile(rf"apic_(?P<rw>read|write) 0x(?P<reg>{_HEX}) = 0x(?P<val>{_HEX})$"),
    "kvm_eoi": re.compile(rf"apicid (?P<apicid>{_HEX}) vector (?P<vector>-?\d+)$"),
    "kvm_apic_ipi": re.compile(rf"dst (?P<dest_id>{_HEX}) vec \d+ icr_low 0x(?P<icr_low>{_HEX})$"),
    "handle_mmio_page_fault": re.compile(rf"addr:(?P<addr>{_HEX}) gfn (?P<gfn>{_HEX}) access (?P<access>{_HEX})$"),
    "kvm_ple_window_update": re.compile(r"vcpu (?P<vcpu_id>\d+) old (?P<old>\d+) new (?P<new>\d+) \((?:growed|shrinked)\)$"),
    "kvm_pml_full": re.compile(r"vcpu (?P<vcpu_id>\d+): PML full$"),
    "kvm_pic_set_irq": re.compile(r"chip (?P<chip>\d+) pin (?P<pin>\d+) \((?P<elcr>edge|level)(?P<imr>\|masked)?\)"
                                  r"(?P<coalesced> \(coalesced\))?$"),
}
_PARSERS["kvm_nested_vmexit"] = _PARSERS["kvm_exit"]
_DEC = {"vcpu_id", "size", "count", "len", "errno", "old", "new"}
_FLAGS = {"immediate_exit", "failed", "reinjected", "used_max_basic", "exception_gp"}


def _convert(event: str, raw: dict[str, str | None]) -> dict[str, Any]:
    """Regex groups → the event's fields (numbers as numbers, symbols back to their values)."""
    if event == "kvm_pic_set_irq":     # the text keeps only the pin's bit of ELCR and IMR
        bit = 1 << int(raw["pin"] or 0)
        return {"chip": int(raw["chip"] or 0), "pin": int(raw["pin"] or 0), "elcr": bit if raw["elcr"] == "level" else 0,
                "imr": bit if raw["imr"] else 0, "coalesced": raw["coalesced"] is not None}
    f: dict[str, Any] = {}
    for k, v in raw.items():
        if k in _FLAGS or (k == "exception" and event == "kvm_msr"):
            f[k] = v is not None
        elif v is None:
            continue
        elif k in _DEC or (k == "vector" and event == "kvm_eoi"):
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


def _kv(part: str) -> tuple[str, Any]:
    k, v = part.split("=", 1)
    try:
        return k, int(v, 0)
    except ValueError:
        return k, v
