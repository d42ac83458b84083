"""The CPU's debug registers as KVM loads them for the guest: DR0-DR3 (linear addresses) and DR7
in GUEST_DR7, which arm the breakpoints the CPU checks while the guest runs (SDM 18.2)."""

from __future__ import annotations

from unicorn.x86_const import UC_X86_REG_DR6

DR6_BS = 1 << 14
DR6_TRAP_BITS = 0xF
DR6_RESET = 0xFFFF0FF0


class DebugRegs:
    """Mixin of SiliconVcpu: DR0-DR3 as loaded before VM entry."""

    def _debugregs_init(self) -> None:
        self.debugregs: list[int] = [0, 0, 0, 0]

    def set_debugregs(self, db: list[int]) -> None:
        """KVM loads the guest's DR0-DR3 into the CPU (vcpu_enter_guest's switch_db_regs)."""
        self.debugregs = list(db)

    def take_db_bits(self) -> int:
        """The DR6 bits of the #DB unicorn just raised (its single-step helper ORs BS into its own
        DR6), as a #DB VM exit reports them in the exit qualification; the CPU's DR6 is left as it
        was before, since a #DB that exits does not write DR6 (SDM 27.1)."""
        dr6 = self.uc.reg_read(UC_X86_REG_DR6)
        self.uc.reg_write(UC_X86_REG_DR6, DR6_RESET)
        return dr6 & (DR6_BS | DR6_TRAP_BITS)
