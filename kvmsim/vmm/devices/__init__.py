"""Device models the VMM offers; DEVICE_TYPES maps a scenario's `type:` to a constructor."""

from __future__ import annotations

from kvmsim.vmm.devices.python import PythonDevice
from kvmsim.vmm.devices.sequence import SequenceRegister
from kvmsim.vmm.devices.simple import DebugExit, PortValue, RegBank, TestReport
from kvmsim.vmm.devices.serial16550 import Serial16550

DEVICE_TYPES = {
    "serial16550": Serial16550,
    "debug-exit": DebugExit,
    "regbank": RegBank,
    "test-report": TestReport,
    "port-value": PortValue,
    "port-sequence": SequenceRegister,
    "mmio-sequence": SequenceRegister,
    "python": PythonDevice,
}
