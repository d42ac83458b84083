"""Model of kvm_emulate.h's struct x86_emulate_ctxt, struct operand and the GPR cache.

The ctxt outlives one decode: EMULTYPE_NO_DECODE re-entry reuses the decode state and the
read caches, so nothing here is rebuilt per instruction; `init_decode_cache` clears only
what the kernel clears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .codes import NR_EMULATOR_GPRS, OP_NONE, VCPU_SREG_DS, X86EMUL_MODE_REAL
from .ops import X86EmulateOps, X86Exception

Execute = Callable[["X86EmulateCtxt"], int]

REG_EFLAGS = 16  # Operand.reg value standing for &ctxt->eflags (em_popf's destination)
_SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


@dataclass
class EmulatorFeatures:
    """Emulator capabilities beyond upstream v6.18 (defaults = upstream behaviour)."""

    # Late-2025 patch series: decode VEX-encoded moves (vmovdqu/vmovdqa/vmovups/vmovaps).
    vex_moves: bool = False
    # kvm.enable_vmware_backdoor module parameter: ports 0x5658/9 pass the TSS bitmap.
    enable_vmware_backdoor: bool = False


class Operand:
    """struct operand. `reg`/`ea`/`seg`/`xmm`/`mm` are the kernel's `addr` union members.

    `reg` is a GPR index (REG_EFLAGS for em_popf) and `reg_shift` is 8 for AH/CH/DH/BH,
    replacing the C pointer into the register file.
    """

    __slots__ = ("type", "bytes", "count", "val", "orig_val", "reg", "reg_shift",
                 "ea", "seg", "xmm", "mm", "data")

    def __init__(self) -> None:
        self.type = OP_NONE
        self.bytes = 0
        self.count = 0
        self.val = 0
        self.orig_val = 0
        self.reg = 0
        self.reg_shift = 0
        self.ea = 0
        self.seg = VCPU_SREG_DS
        self.xmm = 0
        self.mm = 0
        self.data: bytes = b""

    def assign(self, other: Operand) -> None:
        """`*op = ctxt->memop` in decode_operand."""
        self.type, self.bytes, self.count = other.type, other.bytes, other.count
        self.val, self.orig_val = other.val, other.orig_val
        self.reg, self.reg_shift = other.reg, other.reg_shift
        self.ea, self.seg, self.xmm, self.mm = other.ea, other.seg, other.xmm, other.mm

    def __repr__(self) -> str:
        return (f"Operand(type={self.type}, bytes={self.bytes}, val={self.val:#x}, "
                f"reg={self.reg}, ea={self.ea:#x}, seg={self.seg})")


class ReadCache:
    """struct read_cache: 1024 bytes plus pos/end cursors (mem_read and io_read)."""

    __slots__ = ("data", "pos", "end", "view")

    def __init__(self) -> None:
        self.data = bytearray(1024)
        self.pos = 0
        self.end = 0
        self.view = memoryview(self.data)   # not kernel state: one view of data, sliced per read


class FetchCache:
    """struct fetch_cache: the instruction bytes fetched so far (15-byte cap)."""

    __slots__ = ("data", "ptr", "end", "view")

    def __init__(self) -> None:
        self.data = bytearray(16)
        self.ptr = 0
        self.end = 0
        self.view = memoryview(self.data)   # not kernel state: one view of data, sliced per fetch


class X86EmulateCtxt:
    """struct x86_emulate_ctxt: architectural inputs, decode cache, operands, caches."""

    # Fixed attribute set: more than CPython's 30 shared-key attributes would turn the
    # instance dict into a plain dict and slow every ctxt.<field> access on the hot path.
    __slots__ = ('ops', 'vcpu', 'features', 'eflags', 'eip', 'mode', 'interruptibility',
                 'have_exception', 'exception', 'perm_ok', 'tf', 'gpa_available', 'gpa_val',
                 'opcode_len', 'b', 'intercept', 'op_bytes', 'ad_bytes', 'execute', 'check_perm',
                 'rip_relative', 'rex_prefix', 'lock_prefix', 'rep_prefix', 'regs_valid',
                 'regs_dirty', 'modrm', 'modrm_mod', 'modrm_reg', 'modrm_rm', 'modrm_seg',
                 'seg_override', 'd', '_eip', 'is_branch', 'vex_l', 'vex', 'src', 'src2', 'dst',
                 'memop', 'memopp', '_regs', 'fetch', 'io_read', 'mem_read', 'decode_cache')

    def __init__(self, ops: X86EmulateOps, vcpu: Any = None,
                 features: EmulatorFeatures | None = None) -> None:
        self.ops = ops
        self.vcpu = vcpu
        self.features = features or EmulatorFeatures()
        # Architectural state handed in by init_emulate_ctxt (x86.c).
        self.eflags = 0x2
        self.eip = 0
        self.mode = X86EMUL_MODE_REAL
        self.interruptibility = 0
        self.have_exception = False
        self.exception = X86Exception()
        self.perm_ok = False
        self.tf = False
        self.gpa_available = False
        self.gpa_val = 0
        # Decode cache.
        self.opcode_len = 1
        self.b = 0
        self.intercept = 0
        self.op_bytes = 4
        self.ad_bytes = 4
        self.execute: Execute | None = None
        self.check_perm: Execute | None = None
        self.rip_relative = False
        self.rex_prefix = 0
        self.lock_prefix = 0
        self.rep_prefix = 0
        self.regs_valid = 0
        self.regs_dirty = 0
        self.modrm = 0
        self.modrm_mod = 0
        self.modrm_reg = 0
        self.modrm_rm = 0
        self.modrm_seg = VCPU_SREG_DS
        self.seg_override = VCPU_SREG_DS
        self.d = 0
        self._eip = 0
        self.is_branch = False
        self.vex_l = 0  # VEX.L when features.vex_moves decoded a VEX move, else 0
        self.vex = False
        self.src = Operand()
        self.src2 = Operand()
        self.dst = Operand()
        self.memop = Operand()
        self.memopp: Operand | None = None
        self._regs = [0] * NR_EMULATOR_GPRS
        self.fetch = FetchCache()
        self.io_read = ReadCache()
        self.mem_read = ReadCache()
        self.decode_cache: Any = None   # not kernel state: decode_cache.DecodeCache, made on first decode


def reg_read(ctxt: X86EmulateCtxt, nr: int) -> int:
    """Read a GPR through the lazy cache (ops.read_gpr on first use)."""
    bit = 1 << nr
    if not ctxt.regs_valid & bit:
        ctxt.regs_valid |= bit
        ctxt._regs[nr] = ctxt.ops.read_gpr(ctxt, nr) & 0xFFFFFFFFFFFFFFFF
    return ctxt._regs[nr]


def reg_write(ctxt: X86EmulateCtxt, nr: int, val: int) -> None:
    """`*reg_write(ctxt, nr) = val`: whole-register write, marked dirty."""
    bit = 1 << nr
    ctxt.regs_valid |= bit
    ctxt.regs_dirty |= bit
    ctxt._regs[nr] = val & 0xFFFFFFFFFFFFFFFF


def reg_rmw(ctxt: X86EmulateCtxt, nr: int) -> int:
    """reg_rmw(): read for a partial update; the register becomes dirty."""
    val = reg_read(ctxt, nr)
    ctxt.regs_dirty |= 1 << nr
    return val


def assign_register(old: int, val: int, nbytes: int, shift: int = 0) -> int:
    """assign_register(): 1/2-byte writes merge, 4-byte writes zero-extend, 8 replace."""
    if nbytes == 4:
        return val & 0xFFFFFFFF
    if nbytes == 8:
        return val & 0xFFFFFFFFFFFFFFFF
    mask = _SIZE_MASK[nbytes] << shift
    return (old & ~mask) | ((val << shift) & mask)


def write_register_operand(ctxt: X86EmulateCtxt, op: Operand) -> None:
    """Write op.val into the register op.reg points at."""
    reg = op.reg
    if reg == REG_EFLAGS:
        ctxt.eflags = assign_register(ctxt.eflags, op.val, op.bytes)
        return
    # reg_rmw + assign_register + reg_write, inlined
    bit = 1 << reg
    regs = ctxt._regs
    if not ctxt.regs_valid & bit:
        reg_read(ctxt, reg)
    nbytes = op.bytes
    if nbytes == 4:
        regs[reg] = op.val & 0xFFFFFFFF
    elif nbytes == 8:
        regs[reg] = op.val & 0xFFFFFFFFFFFFFFFF
    else:
        shift = op.reg_shift
        mask = _SIZE_MASK[nbytes] << shift
        regs[reg] = ((regs[reg] & ~mask) | ((op.val << shift) & mask)) & 0xFFFFFFFFFFFFFFFF
    ctxt.regs_valid |= bit
    ctxt.regs_dirty |= bit


def fetch_register_operand(ctxt: X86EmulateCtxt, op: Operand) -> None:
    """Load op.val from its register, truncated to op.bytes."""
    reg = op.reg
    if reg == REG_EFLAGS:
        raw = ctxt.eflags
    elif ctxt.regs_valid >> reg & 1:
        raw = ctxt._regs[reg]
    else:
        raw = reg_read(ctxt, reg)
    op.val = (raw >> op.reg_shift) & _SIZE_MASK[op.bytes]


def writeback_registers(ctxt: X86EmulateCtxt) -> None:
    """Push every dirty cached GPR back through ops.write_gpr."""
    dirty = ctxt.regs_dirty
    reg = 0
    while dirty:
        if dirty & 1:
            ctxt.ops.write_gpr(ctxt, reg, ctxt._regs[reg])
        dirty >>= 1
        reg += 1


def invalidate_registers(ctxt: X86EmulateCtxt) -> None:
    """Forget the GPR cache (next read goes back to ops.read_gpr)."""
    ctxt.regs_dirty = 0
    ctxt.regs_valid = 0


def emulator_writeback_register_cache(ctxt: X86EmulateCtxt) -> None:
    """Exported for x86.c: flush uncommitted registers (e.g. before KVM_GET_REGS)."""
    writeback_registers(ctxt)


def emulator_invalidate_register_cache(ctxt: X86EmulateCtxt) -> None:
    """Exported for x86.c: userspace changed registers under the emulator."""
    invalidate_registers(ctxt)


def init_decode_cache(ctxt: X86EmulateCtxt) -> None:
    """Clear fields that are set conditionally but read unconditionally, and the caches."""
    ctxt.rip_relative = False
    ctxt.rex_prefix = 0
    ctxt.lock_prefix = 0
    ctxt.rep_prefix = 0
    ctxt.regs_valid = 0
    ctxt.regs_dirty = 0
    ctxt.vex = False
    ctxt.vex_l = 0
    ctxt.io_read.pos = 0
    ctxt.io_read.end = 0
    ctxt.mem_read.end = 0
