"""Event delivery by the CPU (SDM 6.12, 20.1): IVT in real mode, IDT gates in protected/long mode.

Unicorn reports a guest exception but does not deliver it, so silicon does it here:
for exceptions the guest raises natively (not intercepted by KVM) and for events KVM
injects through VM_ENTRY_INTR_INFO_FIELD.  A fault while delivering becomes #DF; a
fault while delivering #DF is a triple fault (the caller turns it into an exit).
"""

from __future__ import annotations

from typing import Protocol

from kvmsim.hw.vmcs import IntrType, Vector

CONTRIBUTORY = frozenset({Vector.DE, Vector.TS, Vector.NP, Vector.SS, Vector.GP})
TSS64_RSP0, TSS64_IST1 = 0x4, 0x24     # 64-bit TSS: RSP0-2 at 4, a reserved qword, IST1-7 at 0x24 (SDM fig. 8-11)
EFLAGS_TF, EFLAGS_IF, EFLAGS_NT, EFLAGS_RF, EFLAGS_VM, EFLAGS_AC = 1 << 8, 1 << 9, 1 << 14, 1 << 16, 1 << 17, 1 << 18


class DeliveryFault(Exception):
    """An exception raised while delivering an event."""

    def __init__(self, vector: int, error_code: int | None = 0, cr2: int | None = None) -> None:
        super().__init__(vector, error_code)
        self.vector, self.error_code, self.cr2 = vector, error_code, cr2   # cr2: a #PF's linear address


class TripleFault(Exception):
    """The CPU shut down: a fault while delivering #DF."""


class TaskGate(Exception):
    """The event's IDT gate is a task gate: a task switch, which VM-exits (hw/taskswitch.py)."""

    def __init__(self, tss_selector: int, vector: int, itype: IntrType, error_code: int | None) -> None:
        super().__init__(tss_selector, vector)
        self.tss_selector, self.vector, self.itype, self.error_code = tss_selector, vector, itype, error_code


class EventCpu(Protocol):
    """What delivery needs from the vCPU (hw/cpu.py provides it)."""

    def mode(self) -> str: ...            # "real", "prot32", "prot16", "long64", "compat"
    def idtr(self) -> tuple[int, int]: ...
    def read_linear(self, addr: int, size: int, user: bool | None = None) -> int: ...   # raises DeliveryFault(#PF)
    def write_linear(self, addr: int, size: int, value: int, user: bool | None = None) -> None: ...
    def reg(self, name: str) -> int: ...
    def set_reg(self, name: str, value: int) -> None: ...
    def load_cs(self, selector: int) -> None: ...
    def enter_ring0(self, cs: int, ss: int) -> None: ...   # CS and SS of a delivery from an outer ring
    def gdtr(self) -> tuple[int, int]: ...
    def set_cr2(self, value: int) -> None: ...


# Fault-class exceptions (SDM table 6-1) other than #DB: delivering one the CPU raised itself
# pushes RFLAGS with RF=1, so that IRET back to the faulting instruction is not stopped by its
# instruction breakpoint again (SDM 17.3.1.1).  #DB pushes RF as it is, like traps and aborts.
FAULTS_SETTING_RF = frozenset({Vector.DE, Vector.BR, Vector.UD, Vector.NM, 9, Vector.TS, Vector.NP,
                               Vector.SS, Vector.GP, Vector.PF, Vector.MF, Vector.AC, Vector.XM, 20, 21})


def deliver(cpu: EventCpu, vector: int, itype: IntrType, error_code: int | None,
            next_rip: int | None = None, cr2: int | None = None, native: bool = False) -> None:
    """Deliver one event, escalating to #DF and to a triple fault as the SDM's table 6-5 says.
    native: the CPU raised the exception itself (not VM-entry injection, whose pushed RFLAGS is
    the guest RFLAGS KVM wrote); a fault then pushes RF=1, as does a fault raised while delivering."""
    first: int | None = None
    while True:
        try:
            if vector == Vector.PF and cr2 is not None:
                cpu.set_cr2(cr2)
            set_rf = native and itype == IntrType.HARD_EXCEPTION and vector in FAULTS_SETTING_RF
            _deliver_once(cpu, vector, itype, error_code, next_rip, set_rf)
            return
        except DeliveryFault as f:
            if vector == Vector.DF:
                raise TripleFault() from None
            itype, next_rip, cr2, native = IntrType.HARD_EXCEPTION, None, None, True
            if _becomes_double(vector, f.vector):
                vector, error_code = Vector.DF, 0
            else:
                vector, error_code, cr2 = f.vector, f.error_code, f.cr2
            first = vector if first is None else first


def _becomes_double(first: int, second: int) -> bool:
    if first in CONTRIBUTORY and second in CONTRIBUTORY:
        return True
    return first == Vector.PF and (second in CONTRIBUTORY or second == Vector.PF)


def _return_rip(cpu: EventCpu, itype: IntrType, next_rip: int | None) -> int:
    soft = itype in (IntrType.SOFT_INTR, IntrType.SOFT_EXCEPTION, IntrType.PRIV_SW_EXCEPTION)
    return next_rip if soft and next_rip is not None else cpu.reg("rip")


def _deliver_once(cpu: EventCpu, vector: int, itype: IntrType, error_code: int | None,
                  next_rip: int | None, set_rf: bool = False) -> None:
    mode = cpu.mode()
    base, limit = cpu.idtr()
    ret = _return_rip(cpu, itype, next_rip)
    flags = cpu.reg("rflags") | (EFLAGS_RF if set_rf else 0)
    ext = 0 if itype in (IntrType.SOFT_INTR,) else 1
    if mode == "real":
        if vector * 4 + 3 > limit:
            raise DeliveryFault(Vector.GP, vector * 8 + 2 + ext)
        ip = cpu.read_linear(base + vector * 4, 2)
        cs = cpu.read_linear(base + vector * 4 + 2, 2)
        sp = cpu.reg("rsp") & 0xFFFF
        ss_base = cpu.seg_base("ss")            # the descriptor cache (big real mode keeps its own)
        for val in (flags & 0xFFFF, cpu.reg("cs"), ret & 0xFFFF):
            sp = (sp - 2) & 0xFFFF
            cpu.write_linear(ss_base + sp, 2, val)
        cpu.set_reg("rsp", (cpu.reg("rsp") & ~0xFFFF) | sp)
        cpu.set_reg("rflags", flags & ~(EFLAGS_IF | EFLAGS_TF | EFLAGS_AC | EFLAGS_RF))
        cpu.load_cs(cs)
        cpu.set_reg("rip", ip)
        return
    long_mode = mode in ("long64", "compat")
    gate_size = 16 if long_mode else 8
    if vector * gate_size + gate_size - 1 > limit:
        raise DeliveryFault(Vector.GP, vector * 8 + 2 + ext)
    lo = cpu.read_linear(base + vector * gate_size, 8, user=False)   # IDT reads are implicit supervisor accesses
    gtype = (lo >> 40) & 0xF
    present = (lo >> 47) & 1
    if present and gtype == 0x5 and not long_mode:
        raise TaskGate((lo >> 16) & 0xFFFF, vector, itype, error_code)   # before the gate's DPL check
    if not present or gtype not in ((0xE, 0xF) if long_mode else (0x6, 0x7, 0xE, 0xF)):
        raise DeliveryFault(Vector.GP if present else Vector.NP, vector * 8 + 2 + ext)
    selector = (lo >> 16) & 0xFFFF
    offset = (lo & 0xFFFF) | ((lo >> 32) & 0xFFFF0000)
    if long_mode:
        offset |= cpu.read_linear(base + vector * 16 + 8, 4, user=False) << 32
    cpl = cpu.cpl() if hasattr(cpu, "cpl") else 0
    if itype == IntrType.SOFT_INTR and (lo >> 45) & 3 < cpl:
        raise DeliveryFault(Vector.GP, vector * 8 + 2)           # INT n through a gate above CPL
    # The handler's ring is its code segment's DPL; an inner ring switches to the TSS stack (SDM 6.12.1).
    dpl = (_gdt_descriptor(cpu, selector) >> 45) & 3 if cpl else 0
    inner = dpl < cpl
    ist = (lo >> 32) & 7 if long_mode else 0
    if long_mode:
        if inner or ist:
            slot = TSS64_IST1 + 8 * (ist - 1) if ist else TSS64_RSP0 + 8 * dpl
            rsp = cpu.read_linear(cpu.segment("tr").base + slot, 8, user=False)
        else:
            rsp = cpu.reg("rsp")
        rsp &= ~0xF
        frame = [cpu.reg("ss"), cpu.reg("rsp"), flags, cpu.reg("cs"), ret]
        if error_code is not None:
            frame.append(error_code)
        for val in frame:
            rsp -= 8
            cpu.write_linear(rsp, 8, val, user=False if inner else None)
        new_ss = dpl                                              # a NULL SS with RPL = the new CPL
    else:
        size = 4 if gtype in (0xE, 0xF) else 2
        frame = [flags, cpu.reg("cs"), ret] + ([error_code] if error_code is not None else [])
        if inner:
            tss = cpu.segment("tr").base
            rsp = cpu.read_linear(tss + 4 + 8 * dpl, 4, user=False)
            new_ss = cpu.read_linear(tss + 8 + 8 * dpl, 2, user=False)
            ss_base = (_gdt_descriptor(cpu, new_ss) >> 16 & 0xFFFFFF) | (_gdt_descriptor(cpu, new_ss) >> 32 & 0xFF000000)
            frame = [cpu.reg("ss"), cpu.reg("rsp") & 0xFFFFFFFF] + frame
        else:
            rsp = cpu.reg("rsp") & 0xFFFFFFFF
            ss_base = cpu.seg_base("ss") if hasattr(cpu, "seg_base") else 0
        for val in frame:
            rsp = (rsp - size) & 0xFFFFFFFF
            cpu.write_linear(ss_base + rsp, size, val & ((1 << (8 * size)) - 1), user=False if inner else None)
    new_flags = flags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)
    if gtype in (0xE, 0x6):
        new_flags &= ~EFLAGS_IF
    cpu.set_reg("rflags", new_flags)
    if inner:
        cpu.enter_ring0(selector, new_ss)
    else:
        cpu.load_cs(selector)
    cpu.set_reg("rsp", rsp)
    cpu.set_reg("rip", offset)


def _gdt_descriptor(cpu: EventCpu, selector: int) -> int:
    """The 8-byte GDT entry of a selector (an implicit supervisor read)."""
    base = cpu.gdtr()[0]
    return cpu.read_linear(base + (selector & ~7), 8, user=False)
