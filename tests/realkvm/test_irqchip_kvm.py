"""KVM_CREATE_IRQCHIP on both backends: the same errors (EEXIST a second time, EINVAL once a vCPU
exists), and a vCPU created after it has the in-kernel APIC (KVM_GET_SREGS' apic_base)."""

from __future__ import annotations

import pytest

from kvmsim.errors import BackendError

pytestmark = pytest.mark.kvm


def _vm(backend: str):
    if backend == "sim":
        from kvmsim.kvm.kvm_main import SimKvm
        return SimKvm().create_vm()
    from kvmsim.realkvm.backend import RealKvm
    return RealKvm().create_vm(owns_kvm=True)


@pytest.mark.parametrize("backend", ["sim", "kvm"])
def test_create_irqchip_errors(backend: str) -> None:
    vm = _vm(backend)
    try:
        vm.create_irqchip()
        with pytest.raises(BackendError) as e:
            vm.create_irqchip()
        assert e.value.errno == 17
        vcpu = vm.create_vcpu(0)
        assert vcpu.get_sregs().apic_base == 0xFEE00900
    finally:
        vm.close()
    vm = _vm(backend)
    try:
        vm.create_vcpu(0)
        with pytest.raises(BackendError) as e:
            vm.create_irqchip()
        assert e.value.errno == 22
    finally:
        vm.close()
