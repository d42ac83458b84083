"""Unicorn's C entry points that run on every VM exit, called without ctypes argument conversion.

unicorn's own `uclib` functions carry `argtypes`, and ctypes converts every argument through
them: ~0.4 us a call, more than the C work of a register read.  These are the same symbols
from a second handle on the same library, without `argtypes`; the callers pass ready-made
ctypes objects (`c_void_p` engine, `c_uint64` addresses, `c_size_t` counts, `byref` pointers),
so nothing is converted and nothing is truncated to a C int.
"""

from __future__ import annotations

import ctypes

from unicorn.unicorn_py3.unicorn import uclib

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
