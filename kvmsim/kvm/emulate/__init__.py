"""Model of arch/x86/kvm/emulate.c (+ kvm_emulate.h): KVM's x86 instruction emulator.

Layout (module = what it models):
  codes.py      result codes, EMULTYPE_*, modes, vectors (kvm_emulate.h, kvm_host.h)
  flags.py      decode flags and operand-type codes (emulate.c #defines)
  opcode.py     struct opcode, sub-tables, the D/N/I/F/G/GD/GP/E/ID/MD/EXT macros
  tables.py     opcode_table, twobyte_table, opcode_map_0f_38 and the group tables
  ctxt.py       struct x86_emulate_ctxt, struct operand, the GPR cache
  ops.py        struct x86_emulate_ops as a Protocol (the boundary with x86.py)
  fetch.py      instruction fetch (__do_insn_fetch_bytes, insn_fetch)
  decode.py     x86_decode_insn
  emulate.py    x86_emulate_insn
  memaccess.py  linearize, segmented_read/write, read_emulated cache, push/pop, PIO read-ahead
  segments.py   segment loading, assign_eip
  fastop.py     the fastop ALU family (flags as hardware computes them)
  em_*.py       executors
  vex.py        VEX moves (EmulatorFeatures.vex_moves, off by default)
  coverage.py   the table census;  bench.py  throughput helper;  ramops.py  flat-RAM ops
"""

from .codes import (EMULATION_FAILED, EMULATION_INTERCEPTED, EMULATION_OK, EMULATION_RESTART,
                    EmulType, X86EmulMode)
from .ctxt import (EmulatorFeatures, Operand, X86EmulateCtxt, emulator_invalidate_register_cache,
                   emulator_writeback_register_cache, init_decode_cache)
from .decode import x86_decode_insn
from .emulate import x86_emulate_insn
from .ops import DescPtr, DescStruct, X86EmulateOps, X86Exception

__all__ = [
    "EMULATION_FAILED", "EMULATION_INTERCEPTED", "EMULATION_OK", "EMULATION_RESTART",
    "EmulType", "X86EmulMode", "EmulatorFeatures", "Operand", "X86EmulateCtxt",
    "emulator_invalidate_register_cache", "emulator_writeback_register_cache",
    "init_decode_cache", "x86_decode_insn", "x86_emulate_insn", "DescPtr", "DescStruct",
    "X86EmulateOps", "X86Exception",
]
