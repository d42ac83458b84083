"""Model of emulate.c's hardware task switch: emulator_task_switch, emulator_do_task_switch,
task_switch_16/32 and the TSS save/load helpers.

The CPU has already decided that the CALL/JMP/IRET/IDT gate is a task switch (and made the
privilege, type and busy checks it makes before the TASK_SWITCH exit); KVM does the rest here.
"""

from __future__ import annotations

import struct

from .codes import (EMULATION_FAILED, EMULATION_OK, OP_NONE, VCPU_REGS_RAX, VCPU_REGS_RBP,
                    VCPU_REGS_RBX, VCPU_REGS_RCX, VCPU_REGS_RDI, VCPU_REGS_RDX, VCPU_REGS_RSI,
                    VCPU_REGS_RSP, VCPU_SREG_CS, VCPU_SREG_DS, VCPU_SREG_ES, VCPU_SREG_FS,
                    VCPU_SREG_GS, VCPU_SREG_LDTR, VCPU_SREG_SS, VCPU_SREG_TR, X86_CR0_TS,
                    X86_EFLAGS_NT, X86_EFLAGS_VM, X86EMUL_CONTINUE, X86EMUL_MODE_PROT32,
                    X86EMUL_MODE_VM86, X86EMUL_UNHANDLEABLE)
from .ctxt import X86EmulateCtxt, invalidate_registers, reg_read, reg_write, writeback_registers
from .em_basic import em_push
from .memaccess import emulate_gp, emulate_ts, linear_read_system, linear_write_system
from .ops import DescStruct
from .segments import (TASK_SWITCH, __load_segment_descriptor, get_segment_selector,
                       read_segment_descriptor, write_segment_descriptor)

# enum of the exit qualification's bits 31:30 (kvm_host.h TASK_SWITCH_*)
TASK_SWITCH_CALL, TASK_SWITCH_IRET, TASK_SWITCH_JMP, TASK_SWITCH_GATE = 0, 1, 2, 3
DR_LOCAL_ENABLE_MASK, DR_LOCAL_SLOWDOWN = 0x55, 0x100
_GPRS = (VCPU_REGS_RAX, VCPU_REGS_RCX, VCPU_REGS_RDX, VCPU_REGS_RBX, VCPU_REGS_RSP, VCPU_REGS_RBP,
         VCPU_REGS_RSI, VCPU_REGS_RDI)
# struct tss_segment_16 (44 bytes): link, sp0..ss2, ip, flag, 8 GPRs, es, cs, ss, ds, ldt.
TSS16 = struct.Struct("<22H")
# struct tss_segment_32 (104 bytes): link, esp0..ss2, cr3, eip, eflags, 8 GPRs, es..gs, ldt, t, io_map.
TSS32 = struct.Struct("<25I2H")
_TSS32_EIP, _TSS32_LDT = 32, 96           # offsetof(eip), offsetof(ldt_selector)


def set_segment_selector(ctxt: X86EmulateCtxt, selector: int, seg: int) -> None:
    """A new selector over the segment's current cache (an unusable one stays unusable)."""
    cur = ctxt.ops.get_segment(ctxt, seg)
    desc, base3 = (cur[1], cur[2]) if cur is not None else (DescStruct(limit=0, type=0, s=0, p=0), 0)
    ctxt.ops.set_segment(ctxt, selector, desc, base3, seg)


def read_interrupt_descriptor(ctxt: X86EmulateCtxt, index: int) -> tuple[int, DescStruct]:
    dt = ctxt.ops.get_idt(ctxt)
    if dt.size < index * 8 + 7:
        return emulate_gp(ctxt, index << 3 | 0x2), DescStruct()
    rc, raw = linear_read_system(ctxt, dt.address + index * 8, 8)
    return rc, DescStruct.unpack(raw) if rc == X86EMUL_CONTINUE else DescStruct()


def _load_segments(ctxt: X86EmulateCtxt, sels: list[tuple[int, int]], cpl: int) -> int:
    """Selectors first (CPL checks see the new CS.RPL), then the descriptors, in the kernel's order;
    a fault here is taken in the new task's context."""
    for sel, seg in sels:
        set_segment_selector(ctxt, sel, seg)
    for sel, seg in sels:
        rc, _ = __load_segment_descriptor(ctxt, sel, seg, cpl, TASK_SWITCH)
        if rc != X86EMUL_CONTINUE:
            return rc
    return X86EMUL_CONTINUE


def save_state_to_tss16(ctxt: X86EmulateCtxt, t: list[int]) -> None:
    t[7], t[8] = ctxt._eip & 0xFFFF, ctxt.eflags & 0xFFFF
    for i, r in enumerate(_GPRS):
        t[9 + i] = reg_read(ctxt, r) & 0xFFFF
    for i, seg in enumerate((VCPU_SREG_ES, VCPU_SREG_CS, VCPU_SREG_SS, VCPU_SREG_DS, VCPU_SREG_LDTR)):
        t[17 + i] = get_segment_selector(ctxt, seg)


def load_state_from_tss16(ctxt: X86EmulateCtxt, t: tuple[int, ...]) -> int:
    ctxt._eip = t[7]
    ctxt.eflags = t[8] | 2
    for i, r in enumerate(_GPRS):
        reg_write(ctxt, r, t[9 + i])
    es, cs, ss, ds, ldt = t[17:22]
    sels = [(ldt, VCPU_SREG_LDTR), (es, VCPU_SREG_ES), (cs, VCPU_SREG_CS), (ss, VCPU_SREG_SS), (ds, VCPU_SREG_DS)]
    return _load_segments(ctxt, sels, cs & 3)


def task_switch_16(ctxt: X86EmulateCtxt, old_tss_sel: int, old_tss_base: int, new_desc: DescStruct) -> int:
    new_tss_base = new_desc.base & 0xFFFF_FFFF
    rc, raw = linear_read_system(ctxt, old_tss_base, TSS16.size)
    if rc != X86EMUL_CONTINUE:
        return rc
    t = list(TSS16.unpack(raw))
    save_state_to_tss16(ctxt, t)
    rc = linear_write_system(ctxt, old_tss_base, TSS16.pack(*t))
    if rc != X86EMUL_CONTINUE:
        return rc
    rc, raw = linear_read_system(ctxt, new_tss_base, TSS16.size)
    if rc != X86EMUL_CONTINUE:
        return rc
    new = TSS16.unpack(raw)
    if old_tss_sel != 0xFFFF:
        new = (old_tss_sel,) + new[1:]
        rc = linear_write_system(ctxt, new_tss_base, old_tss_sel.to_bytes(2, "little"))
        if rc != X86EMUL_CONTINUE:
            return rc
    return load_state_from_tss16(ctxt, new)


def save_state_to_tss32(ctxt: X86EmulateCtxt, t: list[int]) -> None:
    """CR3 and the LDT selector are not saved (nor written back: see task_switch_32)."""
    t[8], t[9] = ctxt._eip & 0xFFFF_FFFF, ctxt.eflags & 0xFFFF_FFFF
    for i, r in enumerate(_GPRS):
        t[10 + i] = reg_read(ctxt, r) & 0xFFFF_FFFF
    for i, seg in enumerate((VCPU_SREG_ES, VCPU_SREG_CS, VCPU_SREG_SS, VCPU_SREG_DS, VCPU_SREG_FS,
                             VCPU_SREG_GS)):
        t[18 + i] = get_segment_selector(ctxt, seg)


def load_state_from_tss32(ctxt: X86EmulateCtxt, t: tuple[int, ...]) -> int:
    if ctxt.ops.set_cr(ctxt, 3, t[7]):
        return emulate_gp(ctxt, 0)
    ctxt._eip = t[8]
    ctxt.eflags = t[9] | 2
    for i, r in enumerate(_GPRS):
        reg_write(ctxt, r, t[10 + i])
    es, cs, ss, ds, fs, gs, ldt = (x & 0xFFFF for x in t[18:25])
    if ctxt.eflags & X86_EFLAGS_VM:       # the selectors are real-mode style in the new task
        ctxt.mode, cpl = X86EMUL_MODE_VM86, 3
    else:
        ctxt.mode, cpl = X86EMUL_MODE_PROT32, cs & 3
    sels = [(ldt, VCPU_SREG_LDTR), (es, VCPU_SREG_ES), (cs, VCPU_SREG_CS), (ss, VCPU_SREG_SS),
            (ds, VCPU_SREG_DS), (fs, VCPU_SREG_FS), (gs, VCPU_SREG_GS)]
    return _load_segments(ctxt, sels, cpl)


def task_switch_32(ctxt: X86EmulateCtxt, old_tss_sel: int, old_tss_base: int, new_desc: DescStruct) -> int:
    new_tss_base = new_desc.base & 0xFFFF_FFFF
    rc, raw = linear_read_system(ctxt, old_tss_base, TSS32.size)
    if rc != X86EMUL_CONTINUE:
        return rc
    t = list(TSS32.unpack(raw))
    save_state_to_tss32(ctxt, t)
    # Only EIP..GS go back to the old TSS (the GPRs and segment selectors).
    rc = linear_write_system(ctxt, old_tss_base + _TSS32_EIP, TSS32.pack(*t)[_TSS32_EIP:_TSS32_LDT])
    if rc != X86EMUL_CONTINUE:
        return rc
    rc, raw = linear_read_system(ctxt, new_tss_base, TSS32.size)
    if rc != X86EMUL_CONTINUE:
        return rc
    new = TSS32.unpack(raw)
    if old_tss_sel != 0xFFFF:
        new = (old_tss_sel,) + new[1:]
        rc = linear_write_system(ctxt, new_tss_base, old_tss_sel.to_bytes(4, "little"))   # a u32 field
        if rc != X86EMUL_CONTINUE:
            return rc
    return load_state_from_tss32(ctxt, new)


def emulator_do_task_switch(ctxt: X86EmulateCtxt, tss_selector: int, idt_index: int, reason: int,
                            has_error_code: bool, error_code: int) -> int:
    ops = ctxt.ops
    old_tss_sel = get_segment_selector(ctxt, VCPU_SREG_TR)
    old_tss_base = ops.get_cached_segment_base(ctxt, VCPU_SREG_TR)
    rc, next_tss_desc, _ = read_segment_descriptor(ctxt, tss_selector)
    if rc != X86EMUL_CONTINUE:
        return rc
    rc, curr_tss_desc, _ = read_segment_descriptor(ctxt, old_tss_sel)
    if rc != X86EMUL_CONTINUE:
        return rc
    # Privileges: only INT n through an IDT task gate is checked here (against the gate's DPL);
    # the CPU checked CALL/JMP before the exit, and events and IRET are not checked.
    if reason == TASK_SWITCH_GATE and idt_index != -1:
        rc, gate = read_interrupt_descriptor(ctxt, idt_index)
        if rc != X86EMUL_CONTINUE:
            return rc
        if (tss_selector & 3) > gate.dpl or ops.cpl(ctxt) > gate.dpl:
            return emulate_gp(ctxt, (idt_index << 3) | 0x2)
    desc_limit = next_tss_desc.limit_scaled()
    if not next_tss_desc.p or (desc_limit < 0x67 and next_tss_desc.type & 8) or desc_limit < 0x2B:
        return emulate_ts(ctxt, tss_selector & 0xFFFC)
    if reason in (TASK_SWITCH_IRET, TASK_SWITCH_JMP):
        curr_tss_desc.type &= ~2                                  # the old task is no longer busy
        write_segment_descriptor(ctxt, old_tss_sel, curr_tss_desc)
    if reason == TASK_SWITCH_IRET:
        ctxt.eflags &= ~X86_EFLAGS_NT
    if reason not in (TASK_SWITCH_CALL, TASK_SWITCH_GATE):
        old_tss_sel = 0xFFFF                                      # no back link
    if next_tss_desc.type & 8:
        rc = task_switch_32(ctxt, old_tss_sel, old_tss_base, next_tss_desc)
    else:
        rc = task_switch_16(ctxt, old_tss_sel, old_tss_base, next_tss_desc)
    if rc != X86EMUL_CONTINUE:
        return rc
    if reason in (TASK_SWITCH_CALL, TASK_SWITCH_GATE):
        ctxt.eflags |= X86_EFLAGS_NT
    if reason != TASK_SWITCH_IRET:
        next_tss_desc.type |= 2                                   # the new task is busy
        write_segment_descriptor(ctxt, tss_selector, next_tss_desc)
    ops.set_cr(ctxt, 0, ops.get_cr(ctxt, 0) | X86_CR0_TS)
    ops.set_segment(ctxt, tss_selector, next_tss_desc, 0, VCPU_SREG_TR)
    if has_error_code:
        ctxt.op_bytes = ctxt.ad_bytes = 4 if next_tss_desc.type & 8 else 2
        ctxt.lock_prefix = 0
        ctxt.src.val = error_code
        rc = em_push(ctxt)
    dr7 = ops.get_dr(ctxt, 7)
    ops.set_dr(ctxt, 7, dr7 & ~(DR_LOCAL_ENABLE_MASK | DR_LOCAL_SLOWDOWN))
    return rc


def emulator_task_switch(ctxt: X86EmulateCtxt, tss_selector: int, idt_index: int, reason: int,
                         has_error_code: bool, error_code: int) -> int:
    """EMULATION_OK, or EMULATION_FAILED when the emulator cannot do it.  A fault it raises
    (#TS, #NP, #GP, #PF) stays in ctxt.exception: kvm_task_switch does not inject it."""
    invalidate_registers(ctxt)
    ctxt._eip = ctxt.eip
    ctxt.dst.type = OP_NONE
    rc = emulator_do_task_switch(ctxt, tss_selector, idt_index, reason, has_error_code, error_code)
    if rc == X86EMUL_CONTINUE:
        ctxt.eip = ctxt._eip
        writeback_registers(ctxt)
    return EMULATION_FAILED if rc == X86EMUL_UNHANDLEABLE else EMULATION_OK
