"""What the debugger shows: each view turns the engine's state into lines of text (no printing here).

Decoders are the model's own (hw/vmcs.py qualifications, emulate/flags.py names): a view never
re-derives what the hardware or KVM computed, it names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvmsim.debug.breakpoints import DebugError, parse_int
from kvmsim.hw import vmcs as V
from kvmsim.hw.exits import cs_mode_of
from kvmsim.kvm.emulate.codes import OperandType
from kvmsim.kvm.emulate.flags import DecodeFlag, DstMask, DstShift, OpKind, OpMask, Src2Shift, SrcMask, SrcShift
from kvmsim.kvm.trace import format_event
from kvmsim.probe import PROBES, Event
from kvmsim.uapi import KvmExit
from kvmsim.vmm.boot import decode_descriptor

if TYPE_CHECKING:
    from kvmsim.debug.engine import Debugger

_RFLAGS = [(0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"), (10, "DF"), (11, "OF"),
           (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"), (19, "VIF"), (20, "VIP"), (21, "ID")]
_CR0 = [(0, "PE"), (1, "MP"), (2, "EM"), (3, "TS"), (4, "ET"), (5, "NE"), (16, "WP"), (18, "AM"), (29, "NW"),
        (30, "CD"), (31, "PG")]
_CR4 = [(0, "VME"), (1, "PVI"), (2, "TSD"), (3, "DE"), (4, "PSE"), (5, "PAE"), (6, "MCE"), (7, "PGE"), (8, "PCE"),
        (9, "OSFXSR"), (10, "OSXMMEXCPT"), (11, "UMIP"), (12, "LA57"), (13, "VMXE"), (16, "FSGSBASE"),
        (17, "PCIDE"), (18, "OSXSAVE"), (20, "SMEP"), (21, "SMAP"), (22, "PKE")]
_EFER = [(0, "SCE"), (8, "LME"), (10, "LMA"), (11, "NXE")]
_EPT_QUAL = [(0, "read"), (1, "write"), (2, "fetch"), (3, "entry_readable"), (4, "entry_writable"),
             (5, "entry_executable"), (7, "gva_valid"), (8, "gva_translated"), (12, "nmi_unblocking")]


def bits(value: int, names: list[tuple[int, str]]) -> str:
    return " ".join(n for b, n in names if value >> b & 1) or "-"


def _controls(prefix: str) -> list[tuple[int, str]]:
    out = []
    for k, v in vars(V).items():
        if k.startswith(prefix) and isinstance(v, int) and v and not v & (v - 1):
            out.append((v.bit_length() - 1, k.removeprefix(prefix)))
    return sorted(out)


# ---------------------------------------------------------------- registers

def regs(dbg: "Debugger") -> list[str]:
    r = dbg.registers()
    names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
             "r14", "r15"]
    out = []
    for i in range(0, len(names), 4):
        out.append("  ".join(f"{n:>3} {r[n]:016x}" for n in names[i:i + 4]))
    out.append(f"rip {r['rip']:016x} {dbg.symbolize(dbg.hw.linear_rip())}")
    out.append(f"rflags {r['rflags']:08x} [{bits(r['rflags'], _RFLAGS)}]  mode {dbg.mode()}  cpl {dbg.hw.cpl()}")
    return out


def sregs(dbg: "Debugger") -> list[str]:
    hw = dbg.hw
    out = []
    for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"):
        s = hw.segment(n)
        out.append(f"{n:>3} sel {s.selector:04x} base {s.base:016x} limit {s.limit:08x} type {s.type:x} "
                   f"s {s.s} dpl {s.dpl} p {s.present} db {s.db} l {s.l} g {s.g}{' unusable' if s.unusable else ''}")
    gb, gl = hw.gdtr()
    ib, il = hw.idtr()
    out.append(f"gdt base {gb:016x} limit {gl:04x}   idt base {ib:016x} limit {il:04x}")
    out += gdt_entries(dbg, gb, gl)
    out.append(f"cr0 {hw.cr(0):016x} [{bits(hw.cr(0), _CR0)}]")
    out.append(f"cr2 {hw.cr(2):016x}  cr3 {hw.cr(3):016x}  cr8 {hw.cr(8):x}")
    out.append(f"cr4 {hw.cr(4):016x} [{bits(hw.cr(4), _CR4)}]")
    out.append(f"efer {hw.efer():016x} [{bits(hw.efer(), _EFER)}]   mode {dbg.mode()}")
    return out


def gdt_entries(dbg: "Debugger", base: int, limit: int, most: int = 16) -> list[str]:
    """The GDT's present descriptors, decoded (vmm/boot.decode_descriptor)."""
    out = []
    for off in range(8, min(limit + 1, 8 * most), 8):
        try:
            raw = int.from_bytes(dbg.read_memory(base + off, 8), "little")
        except DebugError:
            break
        if not raw:
            continue
        d = decode_descriptor(raw)
        out.append(f"  gdt[{off:#04x}] base {d['base']:08x} limit {d['limit']:08x} type {d['type']:x} s {d['s']} "
                   f"dpl {d['dpl']} p {d['present']} l {d['l']} db {d['db']} g {d['g']}")
    return out


# ---------------------------------------------------------------- VMCS

def exit_qualification(reason: int, q: int) -> str:
    """The exit qualification decoded into the named fields of the SDM table for this exit."""
    basic = reason & 0xFFFF
    if basic == V.ExitReason.IO_INSTRUCTION:
        d = V.IoExitQual.decode(q)
        return (f"port {d.port:#x} size {d.size} {'in' if d.is_in else 'out'} string {int(d.string)} "
                f"rep {int(d.rep)} imm {int(d.imm)}")
    if basic == V.ExitReason.CR_ACCESS:
        c = V.CrExitQual.decode(q)
        return (f"cr {c.cr} access {c.access.name} gpr {V.GPR_ORDER[c.gpr]} lmsw_mem {int(c.lmsw_mem)} "
                f"lmsw_source {c.lmsw_source:#x}")
    if basic == V.ExitReason.DR_ACCESS:
        d2 = V.DrExitQual.decode(q)
        return f"dr {d2.dr} {'from' if d2.from_dr else 'to'} gpr {V.GPR_ORDER[d2.gpr]}"
    if basic == V.ExitReason.EPT_VIOLATION:
        return f"[{bits(q, _EPT_QUAL)}]"
    return "-" if not q else f"{q:#x}"


def intr_info(info: int) -> str:
    if not info & V.INTR_INFO_VALID_MASK:
        return "invalid"
    t = info & V.INTR_INFO_INTR_TYPE_MASK
    try:
        tname = V.IntrType(t).name
    except ValueError:
        tname = f"{t:#x}"
    vec = info & 0xFF
    try:
        vname = V.Vector(vec).name
    except ValueError:
        vname = str(vec)
    return (f"valid vector {vec} ({vname}) type {tname}"
            + (" error_code" if info & V.INTR_INFO_DELIVER_CODE_MASK else "")
            + (" nmi_unblock" if info & V.INTR_INFO_UNBLOCK_NMI else ""))


def vmcs(dbg: "Debugger") -> list[str]:
    v = dbg.hw.vmcs
    r = v.vm_exit_reason
    return [
        f"exit reason        {V.exit_reason_name(r)} ({r & 0xFFFF})",
        f"exit qualification {v.exit_qualification:#018x}  {exit_qualification(r, v.exit_qualification)}",
        f"instruction length {v.vm_exit_instruction_len}",
        f"interruption info  {v.vm_exit_intr_info:#010x}  {intr_info(v.vm_exit_intr_info)}",
        f"intr error code    {v.vm_exit_intr_error_code:#x}",
        f"idt vectoring      {v.idt_vectoring_info_field:#010x}  {intr_info(v.idt_vectoring_info_field)}",
        f"guest physical     {v.guest_physical_address:#x}",
        f"guest linear       {v.guest_linear_address:#x}",
        f"entry intr info    {v.vm_entry_intr_info_field:#010x}  {intr_info(v.vm_entry_intr_info_field)}",
        f"interruptibility   {v.guest_interruptibility_info:#x}",
        f"cpu_based          {v.cpu_based_vm_exec_control:#010x} "
        f"[{bits(v.cpu_based_vm_exec_control, _controls('CPU_BASED_'))}]",
        f"secondary          {v.secondary_vm_exec_control:#010x} "
        f"[{bits(v.secondary_vm_exec_control, _controls('SECONDARY_EXEC_'))}]",
        f"cr0 mask/shadow    {v.cr0_guest_host_mask:#x} / {v.cr0_read_shadow:#x}   "
        f"cr4 mask/shadow {v.cr4_guest_host_mask:#x} / {v.cr4_read_shadow:#x}",
    ]


# ---------------------------------------------------------------- kvm_run

def kvm_run(dbg: "Debugger") -> list[str]:
    kv = dbg.kvcpu
    run = kv.run
    reason = run.exit_reason
    name = KvmExit(reason).kname if reason in KvmExit._value2member_map_ else str(reason)
    out = [f"exit_reason {name} ({reason})  immediate_exit {run.immediate_exit}  if_flag {run.if_flag}  "
           f"ready_for_interrupt_injection {run.ready_for_interrupt_injection}  cr8 {run.cr8}  flags {run.flags:#x}"]
    if reason == KvmExit.IO:
        io = run.io
        data = bytes(kv.mapping.buf[io.data_offset: io.data_offset + io.size * io.count])
        out.append(f"io.direction {'out' if io.direction else 'in'} io.size {io.size} io.port {io.port:#x} "
                   f"io.count {io.count} io.data_offset {io.data_offset:#x}  data {data.hex()}")
    elif reason == KvmExit.MMIO:
        m = run.mmio
        out.append(f"mmio.phys_addr {m.phys_addr:#x} mmio.len {m.len} mmio.is_write {m.is_write} "
                   f"mmio.data {bytes(m.data)[:m.len].hex()}")
    elif reason in (KvmExit.X86_RDMSR, KvmExit.X86_WRMSR):
        x = run.msr
        out.append(f"msr.index {x.index:#x} msr.data {x.data:#x} msr.reason {x.reason} msr.error {x.error}")
    elif reason == KvmExit.INTERNAL_ERROR:
        ie = run.internal
        out.append(f"internal.suberror {ie.suberror} ndata {ie.ndata} data "
                   + " ".join(f"{ie.data[i]:#x}" for i in range(min(ie.ndata, 16))))
    elif reason == KvmExit.FAIL_ENTRY:
        out.append(f"fail_entry.hardware_entry_failure_reason {run.fail_entry.hardware_entry_failure_reason:#x}")
    elif reason == KvmExit.EXCEPTION:
        out.append(f"ex.exception {run.ex.exception} ex.error_code {run.ex.error_code:#x}")
    if dbg._pending.run_sets:
        out.append("pending: " + ", ".join(f"{k} = {v.hex() if isinstance(v, bytes) else hex(v)}"
                                            for k, v in dbg._pending.run_sets))
    return out


# ---------------------------------------------------------------- emulator context

def _op(name: str, op: Any) -> str:
    try:
        t = OperandType(op.type).name
    except ValueError:
        t = str(op.type)
    if t == "OP_NONE":
        return f"{name:5} none"
    where = ""
    if t == "OP_REG":
        regs = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
                "r14", "r15")
        where = f" reg {regs[op.reg] if 0 <= op.reg < 16 else op.reg}{'(high byte)' if op.reg_shift else ''}"
    elif t in ("OP_MEM", "OP_MEM_STR"):
        segs = ("es", "cs", "ss", "ds", "fs", "gs", "tr", "ldtr")
        where = f" {segs[op.seg] if 0 <= op.seg < 8 else op.seg}:{op.ea:#x}"
    return f"{name:5} {t} bytes {op.bytes}{where} val {op.val:#x} orig {op.orig_val:#x}"


def ctxt(dbg: "Debugger") -> list[str]:
    c = dbg.kvcpu.arch.emulate_ctxt
    if c is None:
        return ["the emulator has not run yet (no emulate_ctxt)"]
    fetched = bytes(c.fetch.data[:c.fetch.end])
    d = c.d

    def kind(shift: int, mask: int) -> str:
        try:
            return OpKind((d & mask) >> shift).name
        except ValueError:
            return str((d & mask) >> shift)
    flags = [f.name for f in DecodeFlag if f.value & d and f.name]
    modes = {0: "REAL", 1: "VM86", 2: "PROT16", 3: "PROT32", 4: "PROT64"}
    ex = c.execute
    out = [
        f"eip {c.eip:#x} (next {c._eip:#x})  mode {modes.get(c.mode, c.mode)}  fetched {fetched.hex(' ') or '-'}",
        f"opcode {'0f ' if c.opcode_len == 2 else '0f 38 ' if c.opcode_len == 3 else ''}{c.b:02x} "
        f"(opcode_len {c.opcode_len})  execute {getattr(ex, '__name__', None) or '-'}",
        f"flags  Dst={kind(DstShift, DstMask)} Src={kind(SrcShift, SrcMask)} "
        f"Src2={kind(Src2Shift, OpMask << Src2Shift)} {' '.join(flags)}",
        f"op_bytes {c.op_bytes} ad_bytes {c.ad_bytes}  prefixes: rex {c.rex_prefix:#x} lock {c.lock_prefix:#x} "
        f"rep {c.rep_prefix:#x} seg_override {c.seg_override}  modrm {c.modrm:#04x} "
        f"(mod {c.modrm_mod} reg {c.modrm_reg} rm {c.modrm_rm})",
        _op("dst", c.dst), _op("src", c.src), _op("src2", c.src2),
        f"rep: rcx {c._regs[1]:#x}" if c.rep_prefix else "rep: -",
        f"read cache mem {c.mem_read.pos}/{c.mem_read.end} {bytes(c.mem_read.data[:c.mem_read.end]).hex() or '-'}  "
        f"io {c.io_read.pos}/{c.io_read.end}",
    ]
    kv = dbg.kvcpu
    if kv.mmio_nr_fragments:
        for i, f in enumerate(kv.mmio_fragments[:kv.mmio_nr_fragments]):
            cur = " <- current" if i == kv.mmio_cur_fragment else ""
            out.append(f"fragment {i}: gpa {f.gpa:#x} len {f.len} offset {f.offset}{cur}")
    out.append(f"mmio_needed {int(kv.mmio_needed)} is_write {int(kv.mmio_is_write)} "
               f"read_completed {int(kv.mmio_read_completed)}")
    return out


# ---------------------------------------------------------------- stack, memory, code

def bt(dbg: "Debugger") -> list[str]:
    stack = list(PROBES.stack)
    cur = dbg.current
    if cur is not None and cur.event is not None and cur.event.kind == "call":
        stack.append(cur.event.name)      # stopped at its entry: the frame is being pushed
    out = [f"#{i}  {name}" for i, name in enumerate(reversed(stack))]
    out.append(f"#{len(stack)}  guest {dbg.symbolize(dbg.hw.linear_rip())}  ({dbg.mode()})")
    return out


_SIZES = {"b": 1, "h": 2, "w": 4, "g": 8}


def examine(dbg: "Debugger", fmt: str, addr_text: str) -> list[str]:
    """x/FMT ADDR: FMT = [count][x|d|u|c|s|i][b|h|w|g][p]; p: ADDR is a GPA, else a GVA."""
    count, letters = 1, fmt
    num = ""
    while letters and letters[0].isdigit():
        num, letters = num + letters[0], letters[1:]
    if num:
        count = int(num)
    physical = "p" in letters
    size = next((_SIZES[ch] for ch in letters if ch in _SIZES), 4)
    form = next((ch for ch in letters if ch in "xducsi"), "x")
    if count <= 0 or count > 4096:
        raise DebugError("count out of range (1-4096)")
    addr = dbg_address(dbg, addr_text)
    if form == "i":
        return disas(dbg, addr, count, physical=physical)
    if form == "s":
        data = dbg.read_memory(addr, 256, physical)
        text = data.split(bytes(1))[0].decode("latin-1")
        return [f"{addr:#x}: {text!r}"]
    if form == "c":
        size = 1
    data = dbg.read_memory(addr, count * size, physical)
    per = max(1, 16 // size)
    out = []
    for i in range(0, count, per):
        items = []
        for j in range(i, min(count, i + per)):
            v = int.from_bytes(data[j * size:(j + 1) * size], "little")
            if form == "d":
                v = v - (1 << 8 * size) if v >> (8 * size - 1) else v
                items.append(str(v))
            elif form == "u":
                items.append(str(v))
            elif form == "c":
                items.append(repr(chr(v)))
            else:
                items.append(f"0x{v:0{2 * size}x}")
        out.append(f"{'gpa ' if physical else ''}{addr + i * size:#x}: " + " ".join(items))
    return out


def dbg_address(dbg: "Debugger", text: str) -> int:
    """A number, a guest symbol, or a register ($rsp / rsp), with +/- offsets."""
    text = text.strip()
    if not text:
        raise DebugError("an address is needed")
    try:
        return int(dbg.evaluate(text))   # regs, symbols (below), arithmetic
    except DebugError:
        pass
    base, sign, off = text.partition("+") if "+" in text else text.partition("-")
    name = base.strip().lstrip("$%")
    val = dbg.symbol(name)
    if val is None:
        try:
            val = dbg.get_reg(name)
        except DebugError:
            val = parse_int(name)
    if off:
        val = val + parse_int(off) if sign == "+" else val - parse_int(off)
    return val


def disas(dbg: "Debugger", addr: int | None = None, count: int = 8, physical: bool = False) -> list[str]:
    from capstone import Cs, CS_ARCH_X86

    rip = dbg.hw.linear_rip()
    start = rip if addr is None else addr
    try:
        code = dbg.read_memory(start, 15 * count, physical)
    except DebugError:
        code = b""
        for n in range(15 * count, 0, -15):
            try:
                code = dbg.read_memory(start, min(n, 0x1000 - (start & 0xFFF)), physical)
                break
            except DebugError:
                continue
    md = Cs(CS_ARCH_X86, cs_mode_of(dbg.mode()))
    out = []
    for insn in md.disasm(code, start):
        sym = dbg.image.symbolize(insn.address)
        label = f"<{sym}>" if sym and not sym.startswith("0x") else ""
        mark = "=>" if insn.address == rip and not physical else "  "
        out.append(f"{mark} {insn.address:#x} {label:<16} {insn.bytes.hex():<20} {insn.mnemonic} {insn.op_str}")
        if len(out) >= count:
            break
    return out or [f"cannot read code at {start:#x}"]


def event_line(ev: Event) -> str:
    depth = "  " * len(ev.stack)
    if ev.kind == "tp":
        return f"{ev.seq:>7} {depth}{ev.name}: {format_event(ev.name, ev.fields)}"
    args = ", ".join(f"{k}={v:#x}" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}"
                     for k, v in ev.fields.items())
    if ev.kind == "call":
        return f"{ev.seq:>7} {depth}{ev.name}({args}) {{"
    return f"{ev.seq:>7} {depth}}} = {ev.fields.get('ret')}"


def trace(dbg: "Debugger", n: int = 20) -> list[str]:
    evs = list(dbg.trace)[-n:] if n > 0 else []
    return [event_line(e) for e in evs] or [
        "no events recorded: the probe stream is watched while a breakpoint on an exit, a function or a "
        "tracepoint, or a motion through stages (next, step, finish, until) needs it"]


def info_exits(dbg: "Debugger") -> list[str]:
    if not dbg.exit_counts:
        return ["no VM exits yet"]
    total = sum(dbg.exit_counts.values())
    return [f"{name:<24} {n}" for name, n in dbg.exit_counts.most_common()] + [f"{'total':<24} {total}"]


def info_break(dbg: "Debugger") -> list[str]:
    bps = dbg.table.all()
    if not bps:
        return ["no breakpoints"]
    out = ["Num  Type        Enb  Hits  What"]
    for bp in bps:
        out.append(f"{bp.number:<4} {'tbreak' if bp.temporary else 'break':<11} {'y' if bp.enabled else 'n':<4} "
                   f"{bp.hits:<5} {bp.kind} {bp.spec}")
        if bp.condition:
            out.append(f"        stop only if {bp.condition}")
        if bp.ignore_count:
            out.append(f"        ignore next {bp.ignore_count} hits")
    return out


def device(dbg: "Debugger", name: str) -> list[str]:
    devs = dbg.machine.devices
    dev = devs.get(name)
    if dev is None:
        raise DebugError(f"no device {name!r} (devices: {', '.join(devs) or 'none'})")
    out = [f"{name}: {type(dev).__name__}"]
    for k, v in sorted(vars(dev).items()):
        if k.startswith("_") or callable(v):
            continue
        text = repr(dict(v)) if hasattr(v, "items") else repr(v)
        out.append(f"  {k} = {text if len(text) < 200 else text[:197] + '...'}")
    return out
