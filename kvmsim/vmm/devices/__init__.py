"""Device models the VMM offers; DEVICE_TYPES maps a scenario's `type:` to a constructor."""

from __future__ import annotations

from kvmsim.vmm.devices.exit_ports import BochsShutdown, IsaDebugExit
from kvmsim.vmm.devices.fw_cfg import FwCfg
from kvmsim.vmm.devices.pm_timer import AcpiPmTimer
from kvmsim.vmm.devices.python import PythonDevice
from kvmsim.vmm.devices.sequence import SequenceRegister
from kvmsim.vmm.devices.simple import DebugExit, PortValue, RegBank, TestReport
from kvmsim.vmm.devices.serial16550 import Serial16550
from kvmsim.vmm.devices.testdev import PcTestdev

DEVICE_TYPES = {
    "serial16550": Serial16550,
    "debug-exit": DebugExit,
    "regbank": RegBank,
    "test-report": TestReport,
    "port-value": PortValue,
    "port-sequence": SequenceRegister,
    "mmio-sequence": SequenceRegister,
    "python": PythonDevice,
    # the platform QEMU gives kvm-unit-tests (-device pc-testdev -device isa-debug-exit, fw_cfg, PIIX4 PM)
    "fw-cfg": FwCfg,
    "pc-testdev": PcTestdev,
    "isa-debug-exit": IsaDebugExit,
    "bochs-shutdown": BochsShutdown,
    "acpi-pm-timer": AcpiPmTimer,
}
