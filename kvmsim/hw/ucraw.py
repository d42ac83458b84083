"""Unicorn's C entry points that run on every VM exit, called without ctypes argument conversion.

unicorn's own `uclib` functions carry `argtypes`, and ctypes converts every argument through
them: ~0.4 us a call, more than the C work of a register read.  These are the same symbols
from a second handle on the same library, without `argtypes`; the callers pass ready-made
ctypes objects (`c_void_p` engine, `c_uint64` addresses, `c_size_t` counts, `byref` pointers),
so nothing is converted and nothing is truncated to a C int.
"""

from __future__ import annotations

import ctypes
import functools
import struct

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn.unicorn_py3.unicorn import uclib

from kvmsim.errors import KvmSimBug

_lib = ctypes.CDLL(uclib._name)   # dlopen of a loaded library: the same code, fresh function objects

uc_emu_start = _lib.uc_emu_start            # (uc, c_uint64 begin, c_uint64 until, c_uint64 timeout, c_size_t count)
uc_reg_read = _lib.uc_reg_read              # (uc, int regid, byref(value))
uc_reg_write = _lib.uc_reg_write            # (uc, int regid, byref(value))
uc_reg_read_batch = _lib.uc_reg_read_batch  # (uc, int32 ids[], void* vals[], int count)
for _fn in (uc_emu_start, uc_reg_read, uc_reg_write, uc_reg_read_batch):
    _fn.restype = ctypes.c_int             # uc_err
del _fn

UNTIL_NEVER = ctypes.c_uint64(1 << 63)     # emu_start's `until`: never reached; exits stop the CPU
NO_TIMEOUT = ctypes.c_uint64(0)
NO_COUNT = ctypes.c_size_t(0)           # emu_start's instruction count: unlimited


@functools.cache
def emu_counter_offset() -> int:
    """Byte offset in uc_struct of `emu_counter`, the instructions uc_emu_start's count hook has
    seen (the one a count stop was raised at included); `emu_count` follows it.  Found once per
    process by running 37 counted NOPs and looking for the pair (38, 37)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, b"\x90" * 64)
    uc.emu_start(0x1000, 0x2000, 0, 37)
    raw = ctypes.string_at(uc._uch, 4096)
    hits = [off for off in range(0, len(raw) - 15, 8) if struct.unpack_from("<QQ", raw, off) == (38, 37)]
    if len(hits) != 1:
        raise KvmSimBug(f"cannot find unicorn's instruction counter (candidates {hits})")
    return hits[0]
