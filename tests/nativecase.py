"""Test helper: a small guest that reports what happened through 32-bit OUTs to port 0xe0,
run on the sim or on /dev/kvm; the tests compare the reported words with the SDM's answer.

`REPORT_FAULT` (after a `TRY insn`) reports the vector caught (0xff = none) and its error code.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from kvmsim.scenario.result import RunResult
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


def run(body: str, backend: str, mode: str = "long64", **extra) -> RunResult:
    return run_scenario(scenario(body, mode, **extra), backend)


def words(r: RunResult) -> list[int]:
    """The words the guest OUT to port 0xe0, in order."""
    return [int.from_bytes(bytes.fromhex(e.fields["data"]), "little") for e in r.userspace
            if e.reason == "IO" and e.fields.get("port") == PORT and e.fields.get("direction") == 1]


def reported(body: str, backend: str, mode: str = "long64", **extra) -> list[int]:
    """The words the guest OUT to port 0xe0, in order; the run must end in EXIT 0."""
    r = run(body, backend, mode, **extra)
    assert (r.stop.reason, r.stop.code) == ("debug-exit", 0), (r.stop, words(r), r.serial)
    return words(r)


# MARK_TRY insn: TRY with an OUT to port 0xe1 just before the instruction, so that the next VM
# entry (after complete_fast_pio_out skipped the OUT) starts exactly on it.
MARK_TRY = """
.macro MARK_TRY insn:vararg
        movb    $KVMSIM_NO_FAULT, kvmsim_fault_vector
        movl    $0, kvmsim_fault_error
        outb    %al, $0xe1
.Lmark_try\\@:
        \\insn
.Lmark_fix\\@:
        .pushsection .kvmsim_extable, "a"
        .long   .Lmark_try\\@, .Lmark_fix\\@
        .popsection
.endm
"""


@contextmanager
def fixups_at_entry() -> Iterator[list[str]]:
    """While active, a VM entry whose RIP is on an instruction hw/fixups.py lists runs that
    fixup first, as the execution-time trap (lead) will wherever the CPU reaches one; guests put
    an OUT before the instruction (MARK_TRY) so that an entry starts exactly there.  Yields the
    names of the fixups applied."""
    from kvmsim.hw import fixups, paging
    from kvmsim.hw.cpu import SiliconVcpu

    used: list[str] = []
    orig = SiliconVcpu.enter_guest

    def enter_guest(self: SiliconVcpu) -> None:
        if self.uc is not None and not self.vmcs.vm_entry_intr_info_field & 0x80000000:
            try:
                found = fixups.find(self.read_linear_bytes(self.linear_rip(), 15), self.mode())
            except paging.PageFault:
                found = None
            if found is not None:
                used.append(found[0].name)
            if fixups.apply_at_rip(self):
                return
        orig(self)

    SiliconVcpu.enter_guest = enter_guest
    try:
        yield used
    finally:
        SiliconVcpu.enter_guest = orig


def run_with_fixups(body: str, mode: str = "long64", **extra) -> tuple[RunResult, list[str]]:
    """`body` (using MARK_TRY) on the sim with fixups_at_entry: the result and the fixups used."""
    with fixups_at_entry() as used:
        r = run(MARK_TRY + body, "sim", mode, **extra)
    return r, used
