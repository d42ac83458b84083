"""What the CPU reports or checks about an instruction's operands at a VM exit: the
VM-exit instruction-information field of INVPCID (SDM table 28-13) and whether a LOCKed access
splits a cache line (a bus lock, SDM 26.2 "bus-lock detection")."""

from __future__ import annotations

from capstone import CS_ARCH_X86, Cs
from capstone.x86_const import X86_OP_MEM, X86_OP_REG, X86_REG_RIP

from kvmsim.hw.vmcs import GPR_ORDER

_SEGS = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}
_GPR16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
CACHE_LINE = 64
_LEGACY = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})
_md: dict[int, Cs] = {}


def _gpr_number(name: str) -> int:
    """A capstone register name (rax, eax, ax, r8d, ...) → its number in GPR_ORDER."""
    if name.startswith("r") and name[1:].rstrip("dwb").isdigit():
        return int(name[1:].rstrip("dwb"))
    bare = name[1:] if name[0] in "re" and len(name) == 3 else name
    return _GPR16.index(bare) if bare in _GPR16 else GPR_ORDER.index(name)


def _decode(cpu, here: int, code: bytes):
    mode = cpu._cs_mode()
    md = _md.get(mode)
    if md is None:
        md = _md[mode] = Cs(CS_ARCH_X86, mode)
        md.detail = True
    return next(md.disasm(code, here), None)


def vmx_instruction_info(cpu, here: int, code: bytes) -> tuple[int, int, int]:
    """(VMX_INSTRUCTION_INFO, the displacement for the qualification, the register operand's value)
    for an instruction with a register and a memory operand (INVPCID, INVEPT, INVVPID)."""
    insn = _decode(cpu, here, code)
    info, disp, value = 0, 0, 0
    addr_size = {2: 0, 4: 1, 8: 2}.get(insn.addr_size, 2)
    info |= addr_size << 7
    for op in insn.operands:
        if op.type == X86_OP_REG:
            n = _gpr_number(insn.reg_name(op.reg))
            info |= n << 28
            value = cpu.reg(GPR_ORDER[n]) & (((1 << 64) - 1) if cpu.mode() == "long64" else 0xFFFF_FFFF)
        elif op.type == X86_OP_MEM:
            m = op.mem
            base = insn.reg_name(m.base) if m.base else None
            if m.base == X86_REG_RIP:       # RIP-relative: no base register, the displacement from the next insn
                disp = m.disp + here + insn.size
                base = None
            else:
                disp = m.disp
            seg = insn.reg_name(m.segment) if m.segment else ("ss" if base and base[-2:] in ("bp", "sp") else "ds")
            info |= _SEGS[seg] << 15
            info |= {1: 0, 2: 1, 4: 2, 8: 3}.get(m.scale, 0)
            if m.index:
                info |= _gpr_number(insn.reg_name(m.index)) << 18
            else:
                info |= 1 << 22
            if base:
                info |= _gpr_number(base) << 23
            else:
                info |= 1 << 27
    return info, disp & ((1 << 64) - 1), value


def is_split_lock(cpu, here: int, code: bytes) -> bool:
    """A LOCK-prefixed instruction whose memory operand crosses a 64-byte cache line.
    Simplified: XCHG's implicit lock and locked accesses to UC memory are not detected."""
    i, lock, rex = 0, False, cpu.mode() == "long64"
    while i < len(code) and (code[i] in _LEGACY or (rex and 0x40 <= code[i] <= 0x4F)):
        lock |= code[i] == 0xF0
        i += 1
    if not lock:
        return False
    insn = _decode(cpu, here, code)
    if insn is None:
        return False
    for op in insn.operands:
        if op.type == X86_OP_MEM:
            found = cpu._mem_operand(here, code)
            if found is None:
                return False
            linear = found[0]
            return (linear % CACHE_LINE) + op.size > CACHE_LINE
    return False
