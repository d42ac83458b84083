"""Work-arounds for unicorn behaviour that real silicon does not have.

Unicorn reports a guest exception through UC_HOOK_INTR instead of delivering it, so
QEMU's `env->old_exception` (the double-fault tracker, reset only at the end of a
delivery) stays set: the next contributory fault would turn into #DF and the third
would silently halt the CPU.  Silicon delivers events itself (hw/event.py), so after
each reported exception we reset the tracker in unicorn's saved CPU context.  Its
offset is found once by calibration rather than hard-coded per unicorn version.

Unicorn has no register id for XCR0 either, and powers on with XCR0 = 0 (the architectural
reset value is 1): `set_xcr0` writes it into the saved context, at a calibrated offset.

The hook gets the vector only; QEMU leaves the error code it computed (a #PF's P/W/U/I bits,
a #GP's selector) in `env->error_code`, which the hook reads from the same saved context, at
an offset found by calibration too.
"""

from __future__ import annotations

import ctypes
import functools
import struct

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, Uc, UcError
from unicorn.x86_const import UC_CPU_X86_SKYLAKE_SERVER, UC_X86_REG_CR4, UC_X86_REG_FPCW, UC_X86_REG_MXCSR

# The CPU model unicorn emulates.  Its default (Haswell) refuses CLAC/STAC and CLFLUSHOPT with
# #UD although KVM's default CPUID (kvm/cpuid.py, a Skylake-SP host) advertises SMAP and
# CLFLUSHOPT; QEMU's Skylake-Server model implements both (tests/test_native_fidelity.py
# checks every advertised instruction against it).
SILICON_CPU_MODEL = UC_CPU_X86_SKYLAKE_SERVER


def _raw(ctx) -> ctypes.Array:
    """The context's bytes in place (valid only while `ctx` is alive: keep a reference)."""
    return (ctypes.c_char * ctx.size).from_address(ctypes.cast(ctx.context, ctypes.c_void_p).value)


def _snapshot(uc: Uc) -> bytes:
    """A copy of the CPU context's bytes (the context object is freed after the copy, not before)."""
    ctx = uc.context_save()
    return bytes(_raw(ctx))


@functools.cache
def old_exception_offset() -> int | None:
    """Byte offset of old_exception in a unicorn CPU context (-1 before a fault, 0 after a #DE)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, bytes.fromhex("31c9f7f1"))  # xor ecx,ecx; div ecx
    uc.hook_add(UC_HOOK_INTR, lambda u, n, d: u.emu_stop())
    before = _snapshot(uc)
    try:
        uc.emu_start(0x1000, 0x1004)
    except UcError:
        return None
    after = _snapshot(uc)
    hits = [off for off in range(0, min(len(before), len(after)) - 3, 4)
            if struct.unpack_from("<i", before, off)[0] == -1 and struct.unpack_from("<i", after, off)[0] == 0]
    return hits[0] if len(hits) == 1 else None


@functools.cache
def error_code_offset() -> int | None:
    """Byte offset of env->error_code: the one word that holds a #GP's selector error code
    (loading DS with selector 0x1238, beyond the GDT's limit), just below old_exception."""
    top = old_exception_offset()
    if top is None:
        return None
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, bytes.fromhex("66b838128ed8"))  # mov ax,0x1238; mov ds,ax
    uc.hook_add(UC_HOOK_INTR, lambda u, n, d: u.emu_stop())
    try:
        uc.emu_start(0x1000, 0x1006)
    except UcError:
        return None
    after = _snapshot(uc)
    hits = [off for off in range(max(0, top - 256), top, 4) if struct.unpack_from("<i", after, off)[0] == 0x1238]
    return hits[0] if len(hits) == 1 else None


def error_code(uc: Uc) -> int:
    """Inside UC_HOOK_INTR: the error code QEMU computed for the fault being reported (it does
    not survive the stop: read it in the hook)."""
    off = error_code_offset()
    if off is None:
        return 0
    ctx = uc.context_save()
    return struct.unpack_from("<I", _raw(ctx), off)[0]


@functools.cache
def xcr0_offset() -> int | None:
    """Byte offset of env->xcr0 (unicorn has no register id for XCR0): the word XSETBV changes
    from 1 to 3 (RAX is overwritten after each XSETBV so that it cannot match)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_cpu_model(SILICON_CPU_MODEL)
    uc.mem_map(0x1000, 0x1000)
    uc.reg_write(UC_X86_REG_CR4, uc.reg_read(UC_X86_REG_CR4) | 1 << 18)   # OSXSAVE
    raws = []
    for i, value in enumerate((1, 3)):
        # xor ecx,ecx; mov eax,value; xor edx,edx; xsetbv; mov eax,0x5a5a5a5a (each at its own address:
        # unicorn would rerun a cached translation of code rewritten in place)
        code = bytes.fromhex("31c9b8") + value.to_bytes(4, "little") + bytes.fromhex("31d20f01d1b85a5a5a5a")
        at = 0x1000 + 0x100 * i
        uc.mem_write(at, code)
        try:
            uc.emu_start(at, at + len(code))
        except UcError:
            return None
        raws.append(_snapshot(uc))
    hits = [off for off in range(0, len(raws[0]) - 7, 8)
            if struct.unpack_from("<Q", raws[0], off)[0] == 1 and struct.unpack_from("<Q", raws[1], off)[0] == 3]
    return hits[0] if len(hits) == 1 else None


def set_xcr0(uc: Uc, value: int) -> bool:
    """Load XCR0 into unicorn's CPU (as VM entry loads the guest's XCR0); False if the offset
    could not be calibrated."""
    off = xcr0_offset()
    if off is None:
        return False
    ctx = uc.context_save()
    struct.pack_into("<Q", _raw(ctx), off, value)
    uc.context_restore(ctx)
    return True


# The FPU/SSE state a new vCPU has under KVM (fpstate_init_fxstate; XCR0's reset value is x87
# only); unicorn powers on with all of them 0.
FPU_RESET = {UC_X86_REG_FPCW: 0x37F, UC_X86_REG_MXCSR: 0x1F80}


def fpu_reset(uc: Uc) -> None:
    for reg, value in FPU_RESET.items():
        uc.reg_write(reg, value)
    set_xcr0(uc, 1)


def no_until_address(uc: Uc) -> None:
    """Make uc_emu_start's `until` inert (UC_CTL_UC_USE_EXITS with no exit address): silicon has
    no such address, and unicorn, at the end of every emulation, invalidates the translation at
    `until` through the guest's page walk, which fails for an address with no mapping (or a
    non-canonical one): QEMU then records a #GP/#PF in env->old_exception (and error_code) that
    is never reported, and the next fault escalates (to #DF, then a silent triple-fault halt) --
    a single-step trap is lost that way."""
    uc.ctl_exits_enabled(True)
    uc.ctl_set_exits([])


ADDRESS_TOP = (1 << 64) - 1


def remove_cache(uc: Uc, begin: int, end: int) -> None:
    """Drop the translations of linear [begin, end).  UC_CTL_TB_REMOVE_CACHE takes `end` as a
    uint64 and refuses end <= begin, so a range that reaches the top of the address space
    (end = 2**64: code on the last two pages, as kvm-unit-tests' ISR stubs at 0xffffffffffffe000)
    would wrap to 0 and fail with UC_ERR_ARG -- inside a hook, the Python wrapper keeps that error
    and stops the CPU, and uc_emu_start returns having run nothing."""
    end = min(end, ADDRESS_TOP)
    # Simplified: unicorn cannot name the top byte, so a block starting exactly there stays cached.
    uc.ctl_remove_cache(min(begin, end - 1), end)


def reset_old_exception(uc: Uc) -> bool:
    """Clear the tracker; True if it was set (unicorn may also have halted the CPU on a
    fault it escalated by itself, with no hook call: the caller then simply resumes)."""
    off = old_exception_offset()
    if off is None:
        return False
    ctx = uc.context_save()
    raw = _raw(ctx)
    was = struct.unpack_from("<i", raw, off)[0]
    if was == -1:
        return False
    struct.pack_into("<i", raw, off, -1)
    uc.context_restore(ctx)
    return True
