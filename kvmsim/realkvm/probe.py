"""Is a usable /dev/kvm here? The one place tests and the CLI ask (STYLE.md: optional tools, one place)."""

from __future__ import annotations

import os

from kvmsim.errors import BackendError

KVM_API_VERSION = 12  # kvm.h: the only stable API version


def kvm_available(path: str = "/dev/kvm") -> tuple[bool, str]:
    """(True, "kvm_xxx API 12 ...") if a VM with one vCPU can be created, else (False, why not)."""
    if not os.path.exists(path):
        return False, f"{path} does not exist"
    if not os.access(path, os.R_OK | os.W_OK):
        return False, f"{path} is not readable and writable by uid {os.getuid()}"
    from kvmsim.realkvm.backend import RealKvm  # late: keeps import cheap where KVM is absent

    try:
        with RealKvm(path) as kvm:
            version = kvm.api_version()
            if version != KVM_API_VERSION:
                return False, f"{path}: KVM_GET_API_VERSION is {version}, expected {KVM_API_VERSION}"
            info = kvm.host_info()
            with kvm.create_vm() as vm:
                vm.create_vcpu(0)
    except BackendError as e:
        return False, str(e)
    return True, f"{info.module} API {version} on {info.cpu_vendor}, kernel {info.kernel}"
