"""Model of struct kvm_x86_ops (arch/x86/include/asm/kvm_host.h, kvm-x86-ops.h): the vendor callbacks x86.c calls.

vmx.py fills one record (`vt_x86_ops`, as vmx/main.c does) and hands it to
kvm_x86_vendor_init (x86.py), whose kvm_ops_update copies it into `kvm_x86_ops` below, the
one instance x86-side code calls through (`kvm_x86_ops.handle_exit(vcpu, fastpath)`): so no
x86-side module imports vmx.py, as x86.c never includes vmx.c.  Fields keep the kernel's
names and order, for the callbacks this model uses; the signatures are this model's
(inject_irq takes the vector of the userspace PIC's KVM_INTERRUPT; get_exit_info returns the
five words).  A module-level record is an ops table to probe.py: tracing swaps its fields
for their probed twins, as it does for module globals and dict tables.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable

from kvmsim.errors import KvmSimBug
from kvmsim.probe import ops_table

if TYPE_CHECKING:
    from kvmsim.kvm.vcpu import KvmVcpu


def _no_vendor(*args: Any) -> Any:
    raise KvmSimBug("kvm_x86_ops called before kvm_x86_vendor_init (no vendor module loaded)")


@ops_table
@dataclass(slots=True)
class KvmX86Ops:
    """struct kvm_x86_ops: one callable per vendor hook x86.c calls (static_call(kvm_x86_<name>))."""

    name: str = ""
    vcpu_after_set_cpuid: Callable[[KvmVcpu], None] = _no_vendor
    vcpu_create: Callable[[KvmVcpu], None] = _no_vendor
    set_cr0: Callable[[KvmVcpu, int], None] = _no_vendor
    set_cr4: Callable[[KvmVcpu, int], None] = _no_vendor
    set_efer: Callable[[KvmVcpu, int], None] = _no_vendor
    vcpu_run: Callable[[KvmVcpu], int] = _no_vendor
    handle_exit: Callable[[KvmVcpu, int], int] = _no_vendor
    skip_emulated_instruction: Callable[[KvmVcpu], int] = _no_vendor
    inject_irq: Callable[[KvmVcpu, int], None] = _no_vendor
    inject_nmi: Callable[[KvmVcpu], None] = _no_vendor
    inject_exception: Callable[[KvmVcpu], None] = _no_vendor
    nmi_allowed: Callable[[KvmVcpu], bool] = _no_vendor
    get_nmi_mask: Callable[[KvmVcpu], bool] = _no_vendor
    set_nmi_mask: Callable[[KvmVcpu, bool], None] = _no_vendor
    enable_nmi_window: Callable[[KvmVcpu], None] = _no_vendor
    interrupt_allowed: Callable[[KvmVcpu], bool] = _no_vendor
    enable_irq_window: Callable[[KvmVcpu], None] = _no_vendor
    get_exit_info: Callable[[KvmVcpu], tuple[int, int, int, int, int]] = _no_vendor
    vcpu_load: Callable[[KvmVcpu], None] = _no_vendor                  # (scheduled in again)
    sync_dirty_debug_regs: Callable[[KvmVcpu], None] = _no_vendor
    update_cpu_dirty_logging: Callable[[KvmVcpu], None] = _no_vendor   # (KVM_REQ_UPDATE_CPU_DIRTY_LOGGING)
    update_exception_bitmap: Callable[[KvmVcpu], None] = _no_vendor
    get_interrupt_shadow: Callable[[KvmVcpu], int] = _no_vendor
    set_interrupt_shadow: Callable[[KvmVcpu, int], None] = _no_vendor


# x86.c's `struct kvm_x86_ops kvm_x86_ops`: empty until a vendor module loads.
kvm_x86_ops = KvmX86Ops()


def kvm_ops_update(ops: KvmX86Ops) -> None:
    """Copy the vendor's record into kvm_x86_ops (the kernel's memcpy, then static_call_update)."""
    for f in fields(KvmX86Ops):
        setattr(kvm_x86_ops, f.name, getattr(ops, f.name))
