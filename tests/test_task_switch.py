"""Hardware task switches: the CPU's TASK_SWITCH exit (reason 9, qualification = TSS selector and
the source in bits 31:30, IDT-vectoring info for a gate) and KVM's handle_task_switch →
kvm_task_switch → emulator_task_switch, on prot32 guests.  Sim only: kvm_pvm emulates a far CALL/JMP
itself and never exits on a task switch (scenarios/task-switch.yaml says what it does instead)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvmsim import cli
from kvmsim.errors import ScenarioError
from kvmsim.kut import build

from kvmsim.hw.vmcs import ExitReason
from kvmsim.trace.recorder import Recorder
from kvmsim.uapi import KvmExit, KvmInternalError
from tests.simvm import kvm_run, machine, sym

ROOT = Path(__file__).resolve().parent.parent
DEVICES = [{"type": "debug-exit", "port": 0xF4}]
TSS_A, TSS_B = 0x91000, 0x92000

# Our GDT (0x08 code, 0x10 data, 0x18 TSS A, 0x20 TSS B, 0x28 task gate -> 0x20, 0x30 a task gate
# that is not present), task B's state in TSS B, LTR 0x18; then the test's body; task B stores EAX,
# EFLAGS and its stack top at 0x90000 and IRETs (or, when jumped to, EXITs 0x42).
PRELUDE = """
        .include "kvmsim.inc"
        GUEST_ENTRY
        lgdt    gdt_desc
        ljmp    $0x08, $1f
1:      movl    $task_b, 0x92000 + 32
        movl    $0x2, 0x92000 + 36
        movl    $0xb0b0b0b0, 0x92000 + 40
        movl    $0x94000, 0x92000 + 56
        movl    $0x10, 0x92000 + 72
        movl    $0x08, 0x92000 + 76
        movl    $0x10, 0x92000 + 80
        movl    $0x10, 0x92000 + 84
        movl    $0x10, 0x92000 + 88
        movl    $0x10, 0x92000 + 92
        movw    $0x18, %ax
        ltr     %ax
        movl    $0x12345678, %esi
"""
EPILOGUE = """
task_b:
        movl    %eax, 0x90000
        movw    %es, 0x90040
        sldt    0x90044
        movl    %cr3, %eax
        movl    %eax, 0x90048
        pushfl
        popl    %eax
        movl    %eax, 0x90004
        movl    (%esp), %eax
        movl    %eax, 0x90008
        movl    %esp, 0x9000c
        testl   $0x4000, 0x90004
        jz      2f
        iret
after_iret:
        EXIT    0x55
2:      EXIT    0x42

        .data
        .balign 8
gdt:    .quad   0
        .quad   0x00cf9b000000ffff
        .quad   0x00cf93000000ffff
        .long   0x10000067, 0x00008909
tss_b:  .long   0x20000067, 0x00008909
        .long   0x00200000, 0x00008500
        .long   0x00200000, 0x00000500
        .long   0x6000000f, 0x00008209              # 0x38 LDT at 0x96000, two entries
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt
"""


def _build(body: str, **kw):
    return machine(PRELUDE + body + EPILOGUE, "prot32", devices=DEVICES, **kw)


def _ram(m, gpa: int, n: int) -> bytes:
    for base, mem in m.ram:
        if base <= gpa < base + len(mem):
            return bytes(mem[gpa - base:gpa - base + n])
    raise AssertionError(f"{gpa:#x} not in RAM")


def _u32(m, gpa: int) -> int:
    return int.from_bytes(_ram(m, gpa, 4), "little")


def _exits(rec: Recorder) -> list[tuple[int, int, int]]:
    return [(e.fields["exit_reason"], e.fields["info1"], e.fields["info2"]) for e in rec.events
            if e.kind == "tp" and e.name == "kvm_exit"]


def _run_to_exit(m, rec: Recorder | None = None):
    run = kvm_run(m, KvmExit.IO)
    assert run.io.port == 0xF4
    return int.from_bytes(bytes(m.vcpu.mapping.buf[run.io.data_offset:run.io.data_offset + 4]), "little")


def test_scenario_guest_exit_stream_and_tss_state() -> None:
    """CALL through the task gate, IRET back: exactly two TASK_SWITCH exits, qualifications TSS B | CALL
    and TSS A | IRET, no IDT-vectoring info, then the EXIT's OUT."""
    src = (ROOT / "guests" / "task_switch.S").read_text()
    rec = Recorder(functions=False).start()
    try:
        with machine(src, "prot32", devices=DEVICES) as m:
            assert _run_to_exit(m) == 0
            assert _u32(m, 0x90000 + 0x2C) == 1                       # TSS B saved the EIP after its IRET
            selectors = [_u32(m, TSS_A + 72 + 4 * i) for i in range(6)]   # ES CS SS DS FS GS saved at the CALL
            assert selectors == [0x10, 0x08, 0x10, 0x10, 0x10, 0x10]
    finally:
        rec.stop()
    ts = int(ExitReason.TASK_SWITCH)
    assert _exits(rec) == [(ts, 0x20, 0), (ts, 1 << 30 | 0x18, 0), (int(ExitReason.IO_INSTRUCTION), 0xF4_0043, 0)]


FARPTR = """
        ljmp    *farptr
        .data
farptr: .long   0
        .word   0x20
        .text
"""


@pytest.mark.parametrize("jmp", ["ljmp $0x20, $0\n", FARPTR], ids=["ptr16:32", "m16:32"])
def test_jmp_to_a_tss_switches_without_back_link_or_nt(jmp: str) -> None:
    """JMP: the old TSS is no longer busy, the new one is, no back link is written, NT stays clear."""
    rec = Recorder(functions=False).start()
    try:
        with _build(jmp) as m:
            assert _run_to_exit(m) == 0x42                             # task B saw NT clear
            assert _u32(m, 0x90000) == 0xB0B0B0B0
            gdt = sym(m, "gdt")
            assert _ram(m, gdt + 0x18 + 5, 1) == b"\x89" and _ram(m, gdt + 0x20 + 5, 1) == b"\x8b"
            assert _u32(m, TSS_B) == 0                                  # no back link
            assert _u32(m, TSS_A + 64) == 0x12345678                    # task A's ESI saved
            assert m.vcpu.get_sregs().tr.selector == 0x20
            assert m.vcpu.get_sregs().cr0 & 8                           # CR0.TS
    finally:
        rec.stop()
    assert _exits(rec)[0] == (int(ExitReason.TASK_SWITCH), 2 << 30 | 0x20, 0)


def test_int_n_through_an_idt_task_gate() -> None:
    """INT 0x40 through an IDT task gate: qualification TSS | 3 << 30, IDT-vectoring info of the
    software interrupt; KVM skips the INT, so task A resumes after it when task B IRETs."""
    body = """
        movl    $0x00200000, 0x3000 + 0x40 * 8
        movl    $0x00008500, 0x3000 + 0x40 * 8 + 4
        int     $0x40
        movl    %esi, 0x90010
        EXIT    0
"""
    rec = Recorder(functions=False).start()
    try:
        with _build(body) as m:
            assert _run_to_exit(m) == 0
            assert _u32(m, 0x90004) & 0x4000                            # NT in task B
            assert _u32(m, TSS_B) == 0x18                               # back link
            assert _u32(m, 0x90010) == 0x12345678                       # task A resumed after INT
            assert _u32(m, 0x9000C) == 0x94000                          # nothing pushed on B's stack
    finally:
        rec.stop()
    ts = int(ExitReason.TASK_SWITCH)
    assert _exits(rec)[:2] == [(ts, 3 << 30 | 0x20, 0x8000_0440), (ts, 1 << 30 | 0x18, 0)]


def test_exception_with_error_code_through_an_idt_task_gate() -> None:
    """#GP(0x18) (CALL to the busy TSS A) delivered through an IDT task gate: the exit carries the
    hardware exception with its error code, KVM pushes the code on the new task's stack."""
    body = """
        movl    $0x00200000, 0x3000 + 13 * 8
        movl    $0x00008500, 0x3000 + 13 * 8 + 4
        lcall   $0x18, $0
        EXIT    1
"""
    rec = Recorder(functions=False).start()
    try:
        with _build(body) as m:
            # The fault is not skipped: back in task A the CALL faults again, and this second
            # switch resumes task B after its IRET (EXIT 0x55).
            assert _run_to_exit(m) == 0x55
            assert _u32(m, 0x90008) == 0x18                             # error code on B's stack
            assert _u32(m, 0x9000C) == 0x94000 - 4
    finally:
        rec.stop()
    ts = int(ExitReason.TASK_SWITCH)
    assert _exits(rec)[0] == (ts, 3 << 30 | 0x20, 0x8000_0B0D)


@pytest.mark.parametrize("target, vector", [(0x18, 13), (0x30, 11)])
def test_cpu_faults_before_the_exit(target: int, vector: int) -> None:
    """A busy TSS is #GP(sel), a task gate not present #NP(sel): raised by the CPU, no TASK_SWITCH."""
    body = f"""
        INSTALL_EXCEPTION_HANDLERS
        TRY     lcall ${target:#x}, $0
        movzbl  kvmsim_fault_vector, %eax
        movl    %eax, 0x90020
        movl    kvmsim_fault_error, %eax
        movl    %eax, 0x90024
        EXIT    0
"""
    rec = Recorder(functions=False).start()
    try:
        with _build(body) as m:
            assert _run_to_exit(m) == 0
            assert (_u32(m, 0x90020), _u32(m, 0x90024)) == (vector, target)
    finally:
        rec.stop()
    assert all(r != int(ExitReason.TASK_SWITCH) for r, _, _ in _exits(rec))


def test_a_fault_of_the_emulated_switch_is_dropped_as_the_kernel_drops_it() -> None:
    """TSS B's limit 0x40 is too small for a 32-bit TSS: emulator_do_task_switch raises #TS, which
    kvm_task_switch never injects; the guest goes on after the CALL with nothing switched."""
    body = """
        movb    $0x40, tss_b
        lcall   $0x28, $0
        movl    %esi, 0x90010
        str     %ax
        movzwl  %ax, %eax
        movl    %eax, 0x90014
        EXIT    0
"""
    with _build(body) as m:
        assert _run_to_exit(m) == 0
        assert _u32(m, 0x90010) == 0x12345678 and _u32(m, 0x90014) == 0x18
        assert _u32(m, 0x90000) == 0                                    # task B never ran


def test_a_tss_in_mmio_is_read_as_io_needed_and_the_guest_goes_on() -> None:
    """The new TSS has no memslot: read_std answers X86EMUL_IO_NEEDED, which is neither success nor
    EMULATION_FAILED, and mmio_needed stays clear, so kvm_task_switch resumes after the CALL."""
    body = """
        movl    $0x00000067, tss_b
        movl    $0xd0008900, tss_b + 4
        lcall   $0x28, $0
        str     %ax
        movzwl  %ax, %eax
        movl    %eax, 0x90014
        EXIT    0
"""
    with _build(body) as m:
        assert _run_to_exit(m) == 0
        assert _u32(m, 0x90014) == 0x18 and _u32(m, 0x90000) == 0


def test_mmio_during_the_switch_is_an_internal_error() -> None:
    """The error code of an exception delivered through a task gate is pushed on the new task's
    stack; in MMIO that push needs userspace (mmio_needed), which KVM refuses mid-switch:
    KVM_EXIT_INTERNAL_ERROR, EMULATION, no data."""
    body = """
        movl    $0xd0001000, 0x92000 + 56
        movl    $0x00200000, 0x3000 + 13 * 8
        movl    $0x00008500, 0x3000 + 13 * 8 + 4
        lcall   $0x18, $0
        EXIT    1
"""
    with _build(body) as m:
        run = kvm_run(m, KvmExit.INTERNAL_ERROR)
        assert run.internal.suberror == KvmInternalError.EMULATION and run.internal.ndata == 0


def test_call_to_a_16_bit_tss_saves_the_old_task_in_the_new_format() -> None:
    """A 16-bit TSS (type 1): task_switch_16 loads IP, FLAGS, AX, SP and the selectors of the new
    task, which runs 16-bit code.  As in the kernel, the outgoing 32-bit task is saved in the
    *incoming* TSS's format (emulator_do_task_switch picks task_switch_16 by the new TSS's type), so
    TSS A gets a 16-bit image (IP at +14, CS at +36) and its 32-bit slots are left alone; an IRET back would
    read that as a 32-bit TSS.  The 16-bit task therefore ends the run itself."""
    body = """
        movl    $task16, %eax
        subl    $0x100000, %eax
        movw    %ax, 0x95000 + 14
        movw    $0x2, 0x95000 + 16
        movw    $0x1616, 0x95000 + 18
        movw    $0x4000, 0x95000 + 26
        movw    $0x10, 0x95000 + 34
        movw    $0x38, 0x95000 + 36
        movw    $0x10, 0x95000 + 38
        movw    $0x10, 0x95000 + 40
        lgdt    gdt16_desc
        lcall   $0x40, $0
return_a:
        EXIT    1
        .code16
task16:
        addr32 movw %ax, 0x90030
        pushfw
        popw    %ax
        addr32 movw %ax, 0x90032
        movl    $0x16, %eax
        outl    %eax, $0xf4
        .code32
        .data
        .balign 8
gdt16:  .quad   0
        .quad   0x00cf9b000000ffff
        .quad   0x00cf93000000ffff
        .long   0x10000067, 0x00008b09             # TSS A (busy: LTR loaded it)
        .long   0x20000067, 0x00008909
        .long   0x00200000, 0x00008500
        .long   0x00200000, 0x00000500
        .quad   0x00009b100000ffff                 # 0x38 code16, base 0x100000
        .long   0x5000002b, 0x00008109             # 0x40 16-bit TSS at 0x95000, limit 0x2b
gdt16_end:
gdt16_desc:
        .word   gdt16_end - gdt16 - 1
        .long   gdt16
        .text
"""
    rec = Recorder(functions=False).start()
    try:
        with _build(body) as m:
            assert _run_to_exit(m) == 0x16
            assert _ram(m, 0x90030, 2) == b"\x16\x16"                  # AX from the 16-bit TSS
            assert int.from_bytes(_ram(m, 0x90032, 2), "little") & 0x4000   # NT
            assert _ram(m, 0x95000, 2) == b"\x18\x00"                  # back link
            ret = sym(m, "return_a")
            assert int.from_bytes(_ram(m, TSS_A + 14, 2), "little") == ret & 0xFFFF   # 16-bit IP slot
            words = [int.from_bytes(_ram(m, TSS_A + o, 2), "little") for o in (34, 36, 38, 40)]
            assert words == [0x10, 0x08, 0x10, 0x10]                    # ES CS SS DS at 16-bit offsets
            assert _u32(m, TSS_A + 76) == 0                             # the 32-bit CS slot untouched
            assert m.vcpu.get_sregs().tr.selector == 0x40
    finally:
        rec.stop()
    assert [(r, q) for r, q, _ in _exits(rec)][:1] == [(int(ExitReason.TASK_SWITCH), 0x40)]


def test_the_new_task_s_cr3_and_ldt_are_loaded() -> None:
    """TSS B names CR3 0x5000 and the LDT 0x38, and its ES is LDT selector 0x0c: the emulator loads
    CR3 (never saved back), then the LDT, then ES from that LDT."""
    body = """
        movl    $0x0000ffff, 0x96008
        movl    $0x00cf9200, 0x96008 + 4
        movl    $0x5000, 0x92000 + 28
        movl    $0x38, 0x92000 + 96
        movl    $0x0c, 0x92000 + 72
        lcall   $0x28, $0
        movl    %cr3, %eax
        movl    %eax, 0x9004c
        EXIT    0
"""
    with _build(body) as m:
        assert _run_to_exit(m) == 0
        assert int.from_bytes(_ram(m, 0x90040, 2), "little") == 0x0C
        assert int.from_bytes(_ram(m, 0x90044, 2), "little") == 0x38
        assert _u32(m, 0x90048) == 0x5000
        assert _u32(m, 0x9004C) == 0                  # back in task A: TSS A's CR3 (0)
        assert _ram(m, 0x96008 + 5, 1) == b"\x93"    # the LDT's data descriptor, now accessed


def test_kvm_unit_tests_taskswitch_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """kvm-unit-tests' i386 x86/taskswitch.c, unmodified: #GP(0x1234) from a segment load goes through
    an IDT task gate, the handler task sees its error code, then JMPs back through a GDT task gate.
    (taskswitch2, 13 reports, passes too but takes about a minute here: `kvmsim kut --arch i386
    taskswitch2`.)"""
    try:
        tree = build.build_from_archive("i386")
    except ScenarioError as e:
        pytest.skip(f"no kvm-unit-tests build: {e.msg.splitlines()[0]}")
    status = cli.main(["kut", "--kut-dir", str(tree.root), "--log-dir", str(tmp_path), "taskswitch"])
    out = capsys.readouterr().out
    assert status == 0 and re.search(r"^PASS taskswitch$", out, re.M), out
    log = (tmp_path / "taskswitch.log").read_text()
    assert "error code 1234\npost fault\n" in log
