"""MOV CR, MOV DR, CLTS, LMSW and SMSW as a CPU in VMX non-root operation executes them.

The CPU stops at each (trap.py); this module applies the VMCS rule (vmcs.cr_write_exits & co.):
exit with the CR/DR-access qualification, or do what the silicon does without an exit — write the
register keeping host-owned bits, or read CR0/CR4 through the read shadow.  Privilege faults come
first (CPL > 0 is #GP(0) before any exit), except for MOV DR, whose exit comes before them.
"""

from __future__ import annotations

from unicorn import x86_const as U

from kvmsim.hw.vmcs import (CrAccessType, CrExitQual, DrExitQual, ExitReason, Vector, clts_exits, cr_read_exits,
                            cr_read_value, cr_write_exits, cr_write_value, dr_access_exits, lmsw_exits,
                            lmsw_value, GPR_ORDER)

_LEGACY = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})
_CRS = (0, 2, 3, 4, 8)
# A MOV to CR0, CR3 or CR4 that completes without a VM exit serializes the core (and CR3, CR4.PGE
# flush the TLB): hundreds of cycles on current cores where an ordinary instruction retires in about
# one.  The virtual clock (one cycle per retired instruction) charges it this many more.
# Simplified: one figure for every such write, whatever bits change.
SERIALIZING_CR_WRITE_CYCLES = 250


def _split(code: bytes, long_mode: bool) -> tuple[int, int, bytes]:
    """(REX byte or 0, index of the 0F escape, the bytes from there)."""
    i, rex = 0, 0
    while code[i] in _LEGACY or (long_mode and 0x40 <= code[i] <= 0x4F):
        rex = code[i] if long_mode and 0x40 <= code[i] <= 0x4F else 0
        i += 1
    return rex, i, code[i:]


def _gpr(cpu, n: int, long_mode: bool) -> int:
    v = cpu.reg(GPR_ORDER[n])
    return v if long_mode else v & 0xFFFF_FFFF


def _set_gpr(cpu, n: int, value: int, long_mode: bool) -> None:
    cpu.set_reg(GPR_ORDER[n], value if long_mode else value & 0xFFFF_FFFF)


def _retire(cpu, length: int) -> bool:
    """The instruction completes here, not in unicorn: with RFLAGS.TF set the CPU's single-step
    trap follows it (#DB with DR6.BS, which KVM intercepts)."""
    tf = cpu.reg("rflags") & _EFLAGS_TF
    cpu.set_reg("rip", cpu.reg("rip") + length)
    cpu.retired()
    if tf:
        return cpu._exception(Vector.DB, None, qual=DR6_BS)
    return False


def cr_dr_access(cpu, code: bytes, length: int) -> bool:
    """The CPU reached MOV CR/DR, CLTS, LMSW or SMSW; True when that became a VM exit."""
    vmcs, long_mode = cpu.vmcs, cpu.mode() == "long64"
    rex, _, op = _split(code, long_mode)
    privileged = cpu.mode() == "vm86" or cpu.cpl() > 0
    if op[1] == 0x06:                                        # CLTS
        if privileged:
            return cpu._exception(Vector.GP, 0)
        if clts_exits(vmcs):
            return cpu._exit(ExitReason.CR_ACCESS, CrExitQual(0, CrAccessType.CLTS).encode(), length)
        cpu.set_cr(0, cpu.cr(0) & ~0x8)
        return _retire(cpu, length)
    if op[1] == 0x01:                                        # 0F 01 /4 SMSW, /6 LMSW
        return _msw(cpu, op, length, privileged, long_mode, _operand_size(cpu, code[:len(code) - len(op)], rex))
    modrm = op[2]
    num = ((modrm >> 3) & 7) | (8 if rex & 4 else 0)         # CRn/DRn (REX.R)
    gpr = (modrm & 7) | (8 if rex & 1 else 0)                # the register operand (ModRM.mod is ignored)
    if op[1] in (0x21, 0x23):                                # MOV DR
        if dr_access_exits(vmcs):
            return cpu._exit(ExitReason.DR_ACCESS, DrExitQual(num, op[1] == 0x21, gpr).encode(), length)
        return _mov_dr_native(cpu, num, gpr, op[1] == 0x21, length, long_mode, privileged)
    if num not in _CRS:
        return cpu._exception(Vector.UD, None)
    if privileged:
        return cpu._exception(Vector.GP, 0)
    if op[1] == 0x22:                                        # MOV to CR
        value = _gpr(cpu, gpr, long_mode)
        if cr_write_exits(vmcs, num, value):
            return cpu._exit(ExitReason.CR_ACCESS, CrExitQual(num, CrAccessType.MOV_TO_CR, gpr=gpr).encode(), length)
        if num in (0, 3, 4):
            cpu.stall(SERIALIZING_CR_WRITE_CYCLES)
        if num in (0, 4):
            cpu.set_cr(num, cr_write_value(vmcs, num, cpu.cr(num), value))
            return _retire(cpu, length)
        return cpu._step_native(cpu.linear_rip(), length)           # CR2, CR3 (no CR3-load exiting), CR8
    if cr_read_exits(vmcs, num):                             # MOV from CR
        return cpu._exit(ExitReason.CR_ACCESS, CrExitQual(num, CrAccessType.MOV_FROM_CR, gpr=gpr).encode(), length)
    if num in (0, 4):
        _set_gpr(cpu, gpr, cr_read_value(vmcs, num, cpu.cr(num)), long_mode)
        return _retire(cpu, length)
    return cpu._step_native(cpu.linear_rip(), length)


def _msw(cpu, op: bytes, length: int, privileged: bool, long_mode: bool, size: int) -> bool:
    modrm = op[2]
    if (modrm >> 3) & 7 == 4:                                # SMSW: CR0 through the read shadow
        if modrm >> 6 != 3:
            return cpu._step_native(cpu.linear_rip(), length)        # Simplified: SMSW m16 stores the CPU's CR0 bits
        n = (modrm & 7) | (8 if cpu.mode() == "long64" and _rex(op, cpu) & 1 else 0)
        shadowed = cr_read_value(cpu.vmcs, 0, cpu.cr(0))
        old = cpu.reg(GPR_ORDER[n])
        cpu.set_reg(GPR_ORDER[n], (old & ~0xFFFF) | (shadowed & 0xFFFF) if size == 2 else
                    shadowed & ((1 << 8 * size) - 1))
        return _retire(cpu, length)
    if privileged:
        return cpu._exception(Vector.GP, 0)
    if modrm >> 6 == 3:                                      # LMSW r16
        source, mem = cpu.reg(GPR_ORDER[modrm & 7]) & 0xFFFF, False
    else:                                                    # LMSW m16: the CPU reads the word
        linear = cpu.mem_operand_linear(cpu.linear_rip())
        try:
            source, mem = cpu.read_linear(linear, 2), True
        except Exception:                                    # a fault on the read: the CPU raises it
            return cpu._step_native(cpu.linear_rip(), length)
    if lmsw_exits(cpu.vmcs, source):
        return cpu._exit(ExitReason.CR_ACCESS, CrExitQual(0, CrAccessType.LMSW, mem, 0, source).encode(), length)
    cpu.set_cr(0, lmsw_value(cpu.vmcs, cpu.cr(0), source))
    return _retire(cpu, length)


def _rex(op: bytes, cpu) -> int:
    return 0   # the REX byte is consumed by _split; SMSW's register is named by ModRM.rm and REX.B


def _operand_size(cpu, prefixes: bytes, rex: int) -> int:
    """The operand size of SMSW r: REX.W 8; else the code segment's default, 0x66 toggling 16/32
    (SMSW r32 stores all of CR0's low 32 bits, as Intel CPUs do)."""
    mode = cpu.mode()
    if mode == "long64" and rex & 8:
        return 8
    default32 = mode in ("prot32", "compat", "long64")
    return 2 if default32 == (0x66 in prefixes) else 4


DR6_BD, DR6_BS, DR7_GD = 1 << 13, 1 << 14, 1 << 13
_EFLAGS_TF = 1 << 8
DR6_FIXED_1, DR6_VOLATILE, DR7_VOLATILE, DR7_FIXED_1 = 0xFFFE0FF0 | (1 << 16) | (1 << 11), 0x0001E80F, 0xFFFF2BFF, 0x400


def _mov_dr_native(cpu, num: int, gpr: int, from_dr: bool, length: int, long_mode: bool, privileged: bool) -> bool:
    """MOV DR with MOV-DR exiting off (KVM's lazy switch): the CPU's own checks, in its order
    (CPL > 0 #GP, DR4/DR5 with CR4.DE #UD, DR7.GD #DB with DR6.BD set and GD cleared), then the access
    on the registers KVM loaded (DR6 reads its fixed-1 bits; the modelled CPU has no RTM or bus-lock
    detection to report); DR0-3/DR7 writes re-arm the breakpoints (hw/debugregs.py)."""
    if privileged:
        return cpu._exception(Vector.GP, 0)
    if num in (4, 5):
        if cpu.cr(4) & (1 << 3):
            return cpu._exception(Vector.UD, None)
        num += 2
    if num > 7:
        return cpu._exception(Vector.UD, None)
    uc = cpu.uc
    if cpu.vmcs.guest_dr7 & DR7_GD:
        cpu.vmcs.guest_dr7 &= ~DR7_GD
        return cpu._exception(Vector.DB, None, qual=DR6_BD)     # #DB is intercepted: BD in the qualification
    rid = _DR_IDS[num]
    if from_dr:
        value = cpu.vmcs.guest_dr7 if num == 7 else uc.reg_read(rid)
        _set_gpr(cpu, gpr, value, long_mode)
        return _retire(cpu, length)
    value = _gpr(cpu, gpr, long_mode)
    if num >= 6 and value >> 32:
        return cpu._exception(Vector.GP, 0)
    if num == 6:
        value = (value & DR6_VOLATILE) | DR6_FIXED_1
    elif num == 7:
        value = cpu.vmcs.guest_dr7 = (value & DR7_VOLATILE) | DR7_FIXED_1
        value &= ~0xFF                                   # the engine's own breakpoints stay off
    else:
        cpu.debugregs[num] = value
    uc.reg_write(rid, value)
    if num != 6:
        cpu._arm_breakpoints()
    return _retire(cpu, length)


_DR_IDS = {0: U.UC_X86_REG_DR0, 1: U.UC_X86_REG_DR1, 2: U.UC_X86_REG_DR2, 3: U.UC_X86_REG_DR3,
           6: U.UC_X86_REG_DR6, 7: U.UC_X86_REG_DR7}
