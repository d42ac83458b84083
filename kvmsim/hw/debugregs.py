"""The CPU's debug registers as KVM loads them for the guest: DR0-DR3 (linear addresses) and DR7
in GUEST_DR7, which arm the breakpoints the CPU checks while the guest runs (SDM 18.2)."""

from __future__ import annotations


class DebugRegs:
    """Mixin of SiliconVcpu: DR0-DR3 as loaded before VM entry."""

    def _debugregs_init(self) -> None:
        self.debugregs: list[int] = [0, 0, 0, 0]

    def set_debugregs(self, db: list[int]) -> None:
        """KVM loads the guest's DR0-DR3 into the CPU (vcpu_enter_guest's switch_db_regs)."""
        self.debugregs = list(db)
