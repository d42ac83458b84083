"""The CPU's debug registers as KVM loads them for the guest: DR0-DR3 (linear addresses) and DR7
in GUEST_DR7, which arm the breakpoints the CPU checks while the guest runs (SDM 18.2-18.3).

Unicorn keeps DR7 as a plain value (no breakpoint is armed from it), so the silicon arms them:
* an instruction breakpoint is a stop hook at its address (the mechanism exits use, trap.py);
  reaching it with RFLAGS.RF clear is a fault-like #DB before the instruction, with RF set the
  instruction runs and RF is cleared;
* a data breakpoint is a memory hook on its range; while one is armed the CPU runs one
  instruction at a time, and the instruction that touched the range ends in a trap-like #DB.
  After MOV SS / POP SS the #DB waits until the next instruction has completed (SDM 6.8.3);
  if a VM exit comes first, it waits in the VMCS pending-debug-exceptions field, and an event
  injected at the next VM entry discards it.
With #DB intercepted (KVM always does), each #DB is a VM exit whose qualification holds the DR6
bits (B0-B3, BS); DR6 itself is left to KVM.  Simplified: I/O breakpoints (type 10) and the
exact-length alignment rules beyond masking the address are not modelled.
"""

from __future__ import annotations

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_DR6, UC_X86_REG_RIP

from kvmsim.hw import quirks
from kvmsim.hw.exits import cs_mode_of, insn_length

DR6_BS = 1 << 14
DR6_TRAP_BITS = 0xF
DR6_RESET = 0xFFFF0FF0
DR7_TYPE_EXEC, DR7_TYPE_WRITE, DR7_TYPE_IO, DR7_TYPE_RW = 0, 1, 2, 3
_LEN = {0: 1, 1: 2, 2: 8, 3: 4}       # DR7 LENn encoding -> bytes
_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})


def dr7_armed(dr7: int) -> list[tuple[int, int, int]]:
    """(index, type, length) of each breakpoint DR7 enables (L or G bit)."""
    out = []
    for i in range(4):
        if (dr7 >> (2 * i)) & 3:
            out.append((i, (dr7 >> (16 + 4 * i)) & 3, _LEN[(dr7 >> (18 + 4 * i)) & 3]))
    return out


class DebugRegs:
    """Mixin of SiliconVcpu: DR0-DR3 as loaded before VM entry, and the breakpoints they arm."""

    def _debugregs_init(self) -> None:
        self.debugregs: list[int] = [0, 0, 0, 0]
        self._bp_exec: dict[int, int] = {}          # linear address -> DR6 B bits of exec breakpoints
        self._bp_exec_hooks: dict[int, object] = {}  # ... their stop hooks (and those of _bp_movss)
        self._bp_movss: dict[int, int] = {}         # a MOV SS / POP SS right before one -> its address
        self._bp_data_hooks: list[int] = []
        self._bp_armed_key: tuple | None = None
        self.data_bps = False                        # a data breakpoint is armed: one instruction a run
        self.db_hit = 0                              # B bits of data breakpoints the last instruction hit
        self.db_held = 0                             # ... held back by MOV SS blocking
        self.db_held_until = 0                       # ... until the CPU leaves this RIP (the next instruction)

    def _debugregs_power_off(self) -> None:
        """The engine is gone, and its hooks with it: arm again from DR0-3/DR7 at the next load."""
        self._bp_exec, self._bp_exec_hooks, self._bp_data_hooks, self._bp_movss = {}, {}, [], {}
        self._bp_armed_key, self.data_bps = None, False

    def set_debugregs(self, db: list[int]) -> None:
        """KVM loads the guest's DR0-DR3 into the CPU (vcpu_enter_guest's switch_db_regs) after
        GUEST_DR7: the breakpoints are re-armed from both."""
        self.debugregs = list(db)
        self._arm_breakpoints()

    def _arm_breakpoints(self) -> None:
        uc = self.uc
        key = (tuple(self.debugregs), self.vmcs.guest_dr7)
        if uc is None or key == self._bp_armed_key:
            return
        self._bp_armed_key = key
        for addr, h in self._bp_exec_hooks.items():
            self._del_stop_hook(h)
            quirks.remove_cache(uc, addr, addr + 1)
        for h in self._bp_data_hooks:
            uc.hook_del(h)
        self._bp_exec, self._bp_exec_hooks, self._bp_data_hooks, self._bp_movss = {}, {}, [], {}
        for i, kind, length in dr7_armed(self.vmcs.guest_dr7):
            addr = self.debugregs[i]
            if kind == DR7_TYPE_EXEC:
                self._bp_exec[addr] = self._bp_exec.get(addr, 0) | (1 << i)
                # A MOV SS / POP SS right before it would suppress it (SDM 6.8.3): stop there too,
                # so that the CPU knows the breakpoint is reached under MOV-SS blocking.
                for k in range(1, 16):
                    if self._movss_length_linear(addr - k) == k:
                        self._bp_movss[addr - k] = addr
                for a in (addr, *(m for m, t in self._bp_movss.items() if t == addr)):
                    if a not in self._bp_exec_hooks:
                        self._bp_exec_hooks[a] = self._add_stop_hook(a)
                        quirks.remove_cache(uc, a, a + 1)
            elif kind in (DR7_TYPE_WRITE, DR7_TYPE_RW):
                try:       # unicorn's memory hooks filter on physical addresses
                    lo = self.translate(addr & ~(length - 1))
                except Exception:   # noqa: BLE001 - not mapped now: nothing to watch (simplified)
                    continue
                types = UC_HOOK_MEM_WRITE | (UC_HOOK_MEM_READ if kind == DR7_TYPE_RW else 0)
                self._bp_data_hooks.append(uc.hook_add(types, self._on_data_bp, 1 << i, lo, lo + length - 1))
        self.data_bps = bool(self._bp_data_hooks)

    def _on_data_bp(self, uc: Uc, access: int, addr: int, size: int, value: int, bit: int) -> None:
        """The instruction at RIP touched a watched range (simplified: the range was translated
        when DR7 armed it).  MOV SS / POP SS holds its #DB back until the next instruction is done."""
        rip = uc.reg_read(UC_X86_REG_RIP)
        length = self._movss_length(rip)
        if length:
            self.db_held |= bit
            self.db_held_until = rip + length
        else:
            self.db_hit |= bit

    def _movss_length(self, rip: int) -> int:
        """The length of the instruction at RIP if it is MOV SS or POP SS (it loads SS), else 0."""
        return self._movss_length_linear(self.seg_base("cs") + rip if self.mode() != "long64" else rip)

    def _movss_length_linear(self, linear: int) -> int:
        try:
            code = self.read_linear_bytes(linear, 15)
        except Exception:   # noqa: BLE001 - unreadable: not one
            return 0
        i = 0
        while i < 14 and (code[i] in _PREFIXES or (self.mode() == "long64" and 0x40 <= code[i] <= 0x4F)):
            i += 1
        if code[i] == 0x17 or (code[i] == 0x8E and (code[i + 1] >> 3) & 7 == 2):
            return insn_length(code, cs_mode_of(self.mode()))
        return 0

    def exec_breakpoint_at(self, here: int) -> int:
        """DR6 B bits of the enabled instruction breakpoints at linear `here` (0: none)."""
        return self._bp_exec.get(here, 0)

    def lift_exec_breakpoint(self, addr: int) -> object | None:
        h = self._bp_exec_hooks.pop(addr, None)
        if h is not None:
            self._del_stop_hook(h)
        return h

    def rearm_exec_breakpoint(self, addr: int) -> None:
        if (addr in self._bp_exec or addr in self._bp_movss) and addr not in self._bp_exec_hooks and self.uc is not None:
            self._bp_exec_hooks[addr] = self._add_stop_hook(addr)
            quirks.remove_cache(self.uc, addr, addr + 1)

    def take_db_bits(self) -> int:
        """The DR6 bits of the #DB unicorn just raised (its single-step helper ORs BS into its own
        DR6), with any data breakpoint the same instruction hit, as a #DB VM exit reports them in
        the exit qualification; the CPU's DR6 is left as it was, since a #DB that exits does not
        write DR6 (SDM 27.1)."""
        dr6 = self.uc.reg_read(UC_X86_REG_DR6)
        self.uc.reg_write(UC_X86_REG_DR6, DR6_RESET)
        bits, self.db_hit = (dr6 & (DR6_BS | DR6_TRAP_BITS)) | self.db_hit, 0
        return bits
