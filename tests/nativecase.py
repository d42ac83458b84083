"""Test helper: a small guest that reports what happened through 32-bit OUTs to port 0xe0,
run on the sim or on /dev/kvm; the tests compare the reported words with the SDM's answer.

`REPORT_FAULT` (after a `TRY insn`) reports the vector caught (0xff = none) and its error code.
"""

from __future__ import annotations

from kvmsim.scenario.runner import run_scenario
from kvmsim.scenario.schema import Scenario

PORT = 0xE0
NO_FAULT = 0xFF

PRELUDE = """
.include "kvmsim.inc"
.macro REPORT_FAULT
        movzbl  kvmsim_fault_vector, %eax
        outl    %eax, $0xe0
        movl    kvmsim_fault_error, %eax
        outl    %eax, $0xe0
.endm
.macro REPORT_EAX
        outl    %eax, $0xe0
.endm
GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
"""


def scenario(body: str, mode: str = "long64", **extra) -> Scenario:
    doc = {"name": "native", "description": "native fidelity probe",
           "guest": {"asm": PRELUDE + body + "\n        EXIT 0\n", "mode": mode},
           "devices": [{"type": "debug-exit", "port": 0xF4}], **extra}
    return Scenario.model_validate(doc)


def reported(body: str, backend: str, mode: str = "long64", **extra) -> list[int]:
    """The words the guest OUT to port 0xe0, in order; the run must end in EXIT 0."""
    r = run_scenario(scenario(body, mode, **extra), backend)
    words = [int.from_bytes(bytes.fromhex(e.fields["data"]), "little") for e in r.userspace
             if e.reason == "IO" and e.fields.get("port") == PORT and e.fields.get("direction") == 1]
    assert (r.stop.reason, r.stop.code) == ("debug-exit", 0), (r.stop, words, r.serial)
    return words


# HLT_TRY insn: TRY with a HLT just before the instruction, so that KVM_RUN returns KVM_EXIT_HLT
# with RIP on it (handle_halt skipped the HLT): a test can then apply a fixup by hand.
HLT_TRY = """
.macro HLT_TRY insn:vararg
        movb    $KVMSIM_NO_FAULT, kvmsim_fault_vector
        movl    $0, kvmsim_fault_error
        hlt
.Lhlt_try\\@:
        \\insn
.Lhlt_fix\\@:
        .pushsection .kvmsim_extable, "a"
        .long   .Lhlt_try\\@, .Lhlt_fix\\@
        .popsection
.endm
"""


def run_with_fixups(body: str, mode: str = "long64", max_exits: int = 2000) -> tuple[list[int], list[str]]:
    """Run `body` (which uses HLT_TRY) on the sim; at each HLT, apply the fixup the instruction at
    RIP needs, as the execution-time trap will.  Returns the reported words and the fixups used
    (and, when a fixup ended in a VM exit, which one: the run stops there)."""
    from kvmsim.hw import fixups
    from kvmsim.scenario.runner import make_machine
    from kvmsim.uapi import KvmExit

    m = make_machine(scenario(HLT_TRY + body, mode))
    words, used = [], []
    try:
        hw = m.vcpu.vcpu.hw
        for _ in range(max_exits):
            assert m.vcpu.run() == 0
            run = m.vcpu.mapping.run
            reason = KvmExit(run.exit_reason)
            if reason == KvmExit.HLT:
                code = hw.read_linear_bytes(hw.linear_rip(), 15)
                found = fixups.find(code, hw.mode())
                assert found is not None, f"no fixup for {code.hex()}"
                fx, n = found
                used.append(fx.name)
                if fx.run(hw, code, n):   # a VM exit: its reason and the intr-info vector, and stop
                    used.append(f"exit {hw.vmcs.vm_exit_reason} vector {hw.vmcs.vm_exit_intr_info & 0xff}")
                    return words, used
                continue
            assert reason == KvmExit.IO, reason.name
            data = int.from_bytes(bytes(m.vcpu.mapping.buf[run.io.data_offset:run.io.data_offset + run.io.size]),
                                  "little")
            if run.io.port == 0xF4:
                assert data == 0, f"guest exit code {data:#x}"
                return words, used
            if run.io.port == PORT and run.io.direction == 1:
                words.append(data)
            if run.io.direction == 0:    # the serial LSR poll: transmitter empty
                m.vcpu.mapping.buf[run.io.data_offset] = 0x60
        raise AssertionError("guest did not finish")
    finally:
        m.close()
