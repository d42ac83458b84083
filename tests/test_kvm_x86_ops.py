"""kvm_x86_ops: x86.c reaches vmx.c only through the record vmx.py fills and VM creation installs,
and tracing patches that record's fields as it patches any other call site of a probed function."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from kvmsim.kvm import vmx
from kvmsim.kvm.kvm_main import SimKvm
from kvmsim.kvm.kvm_x86_ops import KvmX86Ops, kvm_x86_ops
from kvmsim.probe import PROBES, Event
from kvmsim.scenario.loader import load_scenario
from kvmsim.trace.capture import capture_sim
from tests.test_layers import ROOT, import_edges

HOOKS = [f.name for f in fields(KvmX86Ops) if f.name != "name"]
VENDOR = {"kvmsim.kvm.vmx", "kvmsim.kvm.vmx_controls",    # vmx.c (and its VMCS-control tables,
          "kvmsim.kvm.vmx_guest_state"}                     # its guest-state checks)


def _load_vendor() -> None:
    with SimKvm().create_vm() as vm:
        vm.create_vcpu()


def test_vm_creation_installs_vmx_x86_ops() -> None:
    _load_vendor()
    assert kvm_x86_ops.name == vmx.vmx_x86_ops.name == "kvm_intel"
    for hook in HOOKS:
        fn = getattr(kvm_x86_ops, hook)
        assert fn is getattr(vmx.vmx_x86_ops, hook)
        assert fn.__name__ == f"vmx_{hook}"     # the kernel's vmx_x86_ops names each hook vmx_<hook>


def test_only_vmx_and_vm_creation_import_the_vendor() -> None:
    """The kernel's shape: vmx.c includes x86.h and calls x86.c; x86.c calls vmx.c through kvm_x86_ops only."""
    importers = {e.src for e in import_edges(ROOT) if e.dst in VENDOR and e.src.startswith("kvmsim.kvm")}
    assert importers <= VENDOR | {"kvmsim.kvm.kvm_main"}, importers - VENDOR
    # Besides VM creation only the exit census (an observer: `kvmsim exit-coverage` reads vmx.c's table).
    assert {e.src for e in import_edges(ROOT) if e.dst == "kvmsim.kvm.vmx"} == {"kvmsim.kvm.kvm_main",
                                                                                "kvmsim.trace.exit_coverage"}


def test_tracing_patches_the_record_and_puts_it_back() -> None:
    _load_vendor()
    plain = {hook: getattr(kvm_x86_ops, hook) for hook in HOOKS}
    assert not any(hasattr(fn, "__wrapped__") for fn in plain.values())   # probing is off: no wrapper on the path

    def sub(ev: Event) -> None:
        pass

    PROBES.subscribe(sub)
    try:
        for hook in ("vcpu_run", "handle_exit", "skip_emulated_instruction"):   # the @kfunc hooks
            probed = getattr(kvm_x86_ops, hook)
            assert probed is not plain[hook] and probed.__wrapped__ is plain[hook]
            assert getattr(vmx.vmx_x86_ops, hook) is probed
    finally:
        PROBES.unsubscribe(sub)
    assert {hook: getattr(kvm_x86_ops, hook) for hook in HOOKS} == plain


def test_vendor_hooks_show_in_the_simulated_kernel_stack() -> None:
    """Called through kvm_x86_ops, the vendor's functions still appear where the kernel's stacks have them."""
    cap = capture_sim(load_scenario(Path(ROOT) / "scenarios" / "ioeventfd-doorbell-long64.yaml"))
    calls = {(ev.name, ev.stack[-1]) for ev in cap.events if ev.kind == "call" and ev.stack}
    assert ("vmx_vcpu_run", "vcpu_enter_guest") in calls
    assert ("vmx_handle_exit", "vcpu_enter_guest") in calls
    assert ("vmx_skip_emulated_instruction", "kvm_skip_emulated_instruction") in calls
