"""Each EMULTYPE path of x86_emulate_instruction, driven by whole guests (reference §5, §6):
what the guest, userspace (kvm_run) and the model's struct kvm_vcpu observe afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.hw.vmcs import ExitReason, Vector
from kvmsim.scenario.runner import Machine, make_machine, run_machine, run_scenario
from kvmsim.scenario.schema import Scenario
from kvmsim.uapi import KvmExit

ROOT = Path(__file__).resolve().parents[1]
MMIO = 0xD0000000
DEVICES = [{"type": "serial16550", "port": 0x3F8}, {"type": "debug-exit", "port": 0xF4},
           {"type": "regbank", "gpa": MMIO, "size": 0x1000, "values": {0: 0x1234}}]
FEP = ".byte 0x0f, 0x0b, 0x6b, 0x76, 0x6d"    # __KVM_EMULATE_PREFIX: ud2; "kvm"
HEAD = '.include "kvmsim.inc"\n.globl _start\n_start:\n    INSTALL_EXCEPTION_HANDLERS\n'
# TRY with the forced-emulation prefix outside the guarded range: KVM skips the prefix before it
# emulates, so a fault is reported at the instruction after it (as selftests' KVM_ASM_SAFE_FEP).
FEP_TRY = """
.macro FEP_TRY insn:vararg
    movb $KVMSIM_NO_FAULT, kvmsim_fault_vector
    movl $0, kvmsim_fault_error
    """ + FEP + """
.Lt\\@: \\insn
.Lf\\@:
    .pushsection .kvmsim_extable, "a"
    .long .Lt\\@, .Lf\\@
    .popsection
.endm
"""


def _sc(asm: str, mode: str = "long64", **kw) -> Scenario:
    return Scenario.model_validate({"name": "emultype", "description": "t", "guest": {"asm": asm, "mode": mode},
                                    "devices": DEVICES, **kw}, context={"base_dir": ROOT})


def _run(asm: str, **kw) -> tuple[Machine, object]:
    m = make_machine(_sc(asm, **kw))
    return m, run_machine(m)


def _emu(res) -> dict[str, int]:
    return {k: v for k, v in res.emulation.items() if v}


# ---------------------------------------------------------------- TRAP_UD

def test_trap_ud_vmmcall_is_patched_to_vmcall_and_reexecuted() -> None:
    asm = HEAD + "    mov $12345, %rax\nhc: vmmcall\n    mov %rax, %rbx\n    EXIT 0\n"
    m, res = _run(asm)
    try:
        assert res.stop.reason == "debug-exit" and res.stop.code == 0
        assert _emu(res) == {"TRAP_UD": 1}                       # #UD intercept → em_hypercall
        assert res.exits["EXCEPTION_NMI"] == 1 and res.exits["VMCALL"] == 1
        assert res.regs["rbx"] == (-1000) & (1 << 64) - 1        # -KVM_ENOSYS for nr 12345
        assert res.exceptions == []                               # the guest saw no #UD
        hc = m.image.symbols["hc"]
        assert bytes(m.ram[0][1][hc:hc + 3]) == b"\x0f\x01\xc1"   # fix_hypercall wrote VMCALL
    finally:
        m.close()


def test_trap_ud_without_emulate_on_ud_reaches_the_guest_idt() -> None:
    res = run_scenario(_sc(HEAD + '    EXPECT_FAULT UD_VECTOR, ud2\n    REPORT e, "ud2"\n    REPORT_SUMMARY\n'))
    assert res.serial == "PASS: ud2\nSUMMARY: 1 tests, 0 failures\n"
    assert _emu(res) == {"TRAP_UD": 1}
    assert res.exceptions == [{"vector": Vector.UD, "error_code": None}]


# ---------------------------------------------------------------- TRAP_UD_FORCED

def test_fep_emulates_an_alu_op_on_ram_and_a_register_move() -> None:
    asm = HEAD + f"""    movl $5, val
    mov $3, %eax
    {FEP}
    addl %eax, val
    movl val, %ebx
    mov $7, %ecx
    {FEP}
    mov %ecx, %edx
    EXIT 0
.data
val: .long 0
"""
    res = run_scenario(_sc(asm, kvm={"force_emulation_prefix": True}))
    assert res.stop.code == 0 and _emu(res) == {"TRAP_UD_FORCED": 2}
    assert (res.regs["rbx"], res.regs["rdx"]) == (8, 7)
    assert res.exceptions == []


@pytest.mark.parametrize("setup, insn, vector, error", [
    ("movabs $0x8000000000000000, %rbx", "movl %eax, (%rbx)", Vector.GP, 0),      # non-canonical
    ("xor %edx, %edx; mov $1, %eax; xor %ecx, %ecx", "divl %ecx", Vector.DE, None),
], ids=["mov-noncanonical-gp0", "div-by-zero-de"])
def test_fep_fault_inside_the_emulator_reaches_the_guest_handler(setup, insn, vector, error) -> None:
    asm = FEP_TRY + HEAD + f"""    {setup}
    FEP_TRY {insn}
    movzbl kvmsim_fault_vector, %esi
    movl kvmsim_fault_error, %edi
    EXIT 0
"""
    res = run_scenario(_sc(asm, kvm={"force_emulation_prefix": True}))
    assert res.stop.code == 0, res.serial
    assert (res.regs["rsi"], res.regs["rdi"]) == (vector, error or 0)
    assert _emu(res) == {"TRAP_UD_FORCED": 1}
    assert res.exceptions == [{"vector": vector, "error_code": error}]


def test_fep_with_the_parameter_off_is_a_plain_ud() -> None:
    asm = HEAD + f'    EXPECT_FAULT UD_VECTOR, {FEP}; nop\n    REPORT e, "fep off"\n    REPORT_SUMMARY\n'
    res = run_scenario(_sc(asm))
    assert res.serial.startswith("PASS: fep off")
    assert _emu(res) == {"TRAP_UD": 1}
    assert res.exceptions == [{"vector": Vector.UD, "error_code": None}]


# ---------------------------------------------------------------- SKIP

@pytest.mark.parametrize("nested", [True, False], ids=["host-is-hypervisor", "bare-metal"])
def test_ioeventfd_doorbell_skip(nested: bool) -> None:
    sc = Scenario.model_validate({
        "name": "skip", "description": "t", "guest": {"source": "guests/ioeventfd_doorbell.S", "mode": "long64"},
        "devices": DEVICES + [{"type": "ioeventfd", "gpa": MMIO + 0x40, "len": 0}],
        "kvm": {"host_is_hypervisor": nested}}, context={"base_dir": ROOT})
    res = run_scenario(sc)
    assert res.stop.code == 0 and res.regs["rsi"] == 0x600D          # each doorbell store skipped once
    assert res.devices["ioeventfd"] == {"kicks": 3}
    assert res.exits["EPT_MISCONFIG"] == 3
    # the first kick is an EPT violation (PF emulation); kicks 2 and 3 hit the fast-MMIO bus
    assert _emu(res) == ({"PF": 2, "SKIP": 2} if nested else {"PF": 2})
    assert [u.reason for u in res.userspace] == ["MMIO", "IO"]        # only the regbank write exits


# ---------------------------------------------------------------- PF and NO_DECODE

def test_mmio_read_exits_before_retiring_and_a_write_after() -> None:
    asm = HEAD + "    movabs $0xd0000000, %rbx\nrd: movl (%rbx), %edx\nwr: movl $0x55, 8(%rbx)\n    EXIT 0\n"
    m = make_machine(_sc(asm))
    try:
        run, vcpu = m.vcpu.mapping.run, m.vcpu
        rd, wr = m.image.symbols["rd"], m.image.symbols["wr"]
        assert vcpu.run() == 0 and run.exit_reason == KvmExit.MMIO and not run.mmio.is_write
        assert (run.mmio.phys_addr, run.mmio.len) == (MMIO, 4)
        assert vcpu.get_regs().rip == rd                              # read: no writeback yet
        run.mmio.data[0], run.mmio.data[1] = 0x34, 0x12
        assert vcpu.run() == 0 and run.exit_reason == KvmExit.MMIO and run.mmio.is_write
        regs = vcpu.get_regs()
        assert (regs.rip, regs.rdx) == (wr + 7, 0x1234)               # NO_DECODE finished the read;
        assert bytes(run.mmio.data[:4]) == b"\x55\0\0\0"             # the write retired before exiting
        stat = vcpu.vcpu.stat.emulation_by_type
        assert (stat[0x40], stat[0x1]) == (2, 1)                      # PF ×2, NO_DECODE ×1
    finally:
        m.close()


# ---------------------------------------------------------------- VMWARE_GP (and CPL3 I/O permission)

CPL3_IO = {"source": "guests/cpl3_io.S", "mode": "long64"}
CPL3_DEVICES = DEVICES + [{"type": "port-value", "name": "sysport", "port": 0x60, "size": 1, "value": 0x5A},
                          {"type": "port-value", "name": "backdoor", "port": 0x5658, "size": 4, "value": 0x564D5868}]
GP0 = (Vector.GP, 0)
NO_FAULT = (0xFF, 0)


def _cpl3_run(backdoor: bool) -> tuple[Machine, object, list[int]]:
    """guests/cpl3_io.S (ring-3 segments, TSS.RSP0, an I/O bitmap allowing ports 0x60 and 0xf4,
    iretq to CPL3, then IN 0x60, IN 0x80, IN 0x5658, CLI); its RESULTS table as ten dwords."""
    sc = Scenario.model_validate({"name": "cpl3", "description": "t", "guest": CPL3_IO, "devices": CPL3_DEVICES,
                                  "kvm": {"enable_vmware_backdoor": backdoor}}, context={"base_dir": ROOT})
    m = make_machine(sc)
    res = run_machine(m)
    ram = m.ram[0][1]
    return m, res, [int.from_bytes(ram[0x90000 + 4 * i:0x90004 + 4 * i], "little") for i in range(10)]


def test_cpl3_denied_port_is_gp0_before_any_exit_and_the_guest_handler_takes_it() -> None:
    m, res, t = _cpl3_run(backdoor=False)
    try:
        assert res.stop.code == 0, res.serial
        assert (t[0], t[1], t[7]) == (3, 0x5A, 0)                           # CPL3, IOPL 0; IN 0x60 allowed
        assert (t[2], t[3]) == GP0 and (t[4], t[5], t[6]) == (*GP0, 0x11111111) and (t[8], t[9]) == GP0
        assert [(u.reason, u.fields["port"]) for u in res.userspace] == [("IO", 0x60), ("IO", 0xF4)]
        assert res.exits == {"IO_INSTRUCTION": 2}                           # no exit for the three #GPs
        assert _emu(res) == {} and res.exceptions == []                     # nothing emulated or injected
        assert m.vcpu.vcpu.hw.native_exceptions == 3
        # The CPU switched to TSS.RSP0 (0x80000): the last #GP's frame is there, not on the user stack.
        ram, frame = m.ram[0][1], 0x80000 - 6 * 8
        ss, rsp, _fl, cs, rip, err = (int.from_bytes(ram[frame + 8 * i:frame + 8 * i + 8], "little")
                                      for i in (5, 4, 3, 2, 1, 0))
        assert (ss, rsp, cs, err) == (0x33, 0x70000, 0x3B, 0)
        assert rip < m.image.symbols["_start"] + len(m.image.image)
    finally:
        m.close()


def test_vmware_backdoor_port_exits_to_userspace_and_everything_else_gets_gp0() -> None:
    m, res, t = _cpl3_run(backdoor=True)
    try:
        assert res.stop.code == 0, res.serial
        assert (t[0], t[1]) == (3, 0x5A)
        assert (t[2], t[3]) == GP0                        # IN 0x80: backdoor opcode, port denied → #GP(0)
        assert (t[4], t[5], t[6]) == (*NO_FAULT, 0x564D5868)   # IN 0x5658: let through, EAX from userspace
        assert (t[8], t[9]) == GP0                        # CLI: not a backdoor opcode → #GP(0)
        io = [(u.reason, u.fields["port"], u.fields["size"]) for u in res.userspace]
        assert io == [("IO", 0x60, 1), ("IO", 0x5658, 4), ("IO", 0xF4, 4)]
        assert res.exits == {"IO_INSTRUCTION": 2, "EXCEPTION_NMI": 3}     # every #GP(0) intercepted
        assert _emu(res) == {"VMWARE_GP": 3, "NO_DECODE": 1}               # NO_DECODE: complete_emulated_pio
        assert res.exceptions == [{"vector": Vector.GP, "error_code": 0}] * 2
        assert m.vcpu.vcpu.hw.native_exceptions == 0
    finally:
        m.close()


# ---------------------------------------------------------------- emulation failure

AVX = """    movq %cr4, %rax
    orl $0x40600, %eax
    movq %rax, %cr4
    xorl %ecx, %ecx
    xorl %edx, %edx
    movl $7, %eax
    xsetbv
    movabs $0xd0000000, %rbx
"""


@pytest.mark.parametrize("exit_on_failure", [False, True], ids=["ud-queued", "exit-on-emulation-failure"])
def test_avx_on_mmio_fails_at_cpl0_with_the_instruction_bytes(exit_on_failure: bool) -> None:
    asm = HEAD + AVX + "bad: vmovdqu (%rbx), %ymm0\n    EXIT 0\n"
    m, res = _run(asm, kvm={"exit_on_emulation_failure": exit_on_failure})
    try:
        assert res.stop.reason == "internal-error" and res.stop.suberror == 1
        f = res.userspace[-1].fields
        assert f["ndata"] == 8 and f["data"][0] == 1                     # flags: INSTRUCTION_BYTES
        raw = f["data"][1].to_bytes(8, "little") + f["data"][2].to_bytes(8, "little")
        bad = m.image.symbols["bad"]
        assert raw[0] == 15                                              # a whole 15-byte fetch window
        assert raw[1:16] == bytes(m.ram[0][1][bad:bad + 15])
        assert f["data"][3:8] == [ExitReason.EPT_VIOLATION, 0x181, 0, 0, 0]  # reason, qual (read), idt, intr, err
        assert res.regs["rip"] == bad
        exc = m.vcpu.vcpu.arch.exception
        assert exc.pending == (not exit_on_failure) and (exc.vector == Vector.UD or exit_on_failure)
    finally:
        m.close()


def test_failure_exit_pads_the_bytes_with_nops_when_the_fetch_stops_at_the_page_end() -> None:
    # vmovdqu (%rbx), %ymm0 is 4 bytes (c5 fe 6f 03) ending exactly at a page boundary:
    # __do_insn_fetch_bytes fetches up to the page end only, so insn_size = 4.
    asm = HEAD + AVX + "    jmp bad\n    .org 0xffc, 0x90\nbad: vmovdqu (%rbx), %ymm0\n    EXIT 0\n"
    m, res = _run(asm)
    try:
        assert m.image.symbols["bad"] % 0x1000 == 0xFFC
        f = res.userspace[-1].fields
        raw = f["data"][1].to_bytes(8, "little") + f["data"][2].to_bytes(8, "little")
        assert raw == bytes([4, 0xC5, 0xFE, 0x6F, 0x03]) + b"\x90" * 11
    finally:
        m.close()


# ---------------------------------------------------------------- #DF and triple fault

GP_GATE_OFF = "    movb $0x0e, KVMSIM_IDT_BASE + 13*16 + 5\n"     # #GP gate: P = 0
DF_GATE_OFF = "    movb $0x0e, KVMSIM_IDT_BASE + 8*16 + 5\n"


def test_emulator_gp_with_no_gp_gate_becomes_a_double_fault() -> None:
    asm = HEAD + GP_GATE_OFF + f"    movabs $0x8000000000000000, %rbx\n    {FEP}\n    movl %eax, (%rbx)\n    EXIT 1\n"
    res = run_scenario(_sc(asm, kvm={"force_emulation_prefix": True}))
    # #GP(0) injected → gate not present → #NP(13*8+2+1) → contributory twice → #DF(0)
    assert res.stop.code == 0x100 + Vector.DF and "Unhandled exception 8" in res.serial
    assert "error 0x00000000" in res.serial
    assert res.exceptions == [{"vector": Vector.GP, "error_code": 0}]


def test_emulator_gp_with_no_gp_or_df_gate_shuts_down() -> None:
    asm = HEAD + GP_GATE_OFF + DF_GATE_OFF + f"    movabs $0x8000000000000000, %rbx\n    {FEP}\n    movl %eax, (%rbx)\n    EXIT 1\n"
    res = run_scenario(_sc(asm, kvm={"force_emulation_prefix": True}))
    assert res.stop.reason == "shutdown" and res.exits["TRIPLE_FAULT"] == 1
    assert [u.reason for u in res.userspace][-1] == "SHUTDOWN"


def test_injected_ud_through_a_zero_limit_idt_is_a_triple_fault() -> None:
    asm = '.globl _start\n_start:\n    lidt idtr0\n    ud2\n    hlt\nidtr0: .word 0\n    .quad 0\n'
    res = run_scenario(_sc(asm))
    assert res.stop.reason == "shutdown"
    assert _emu(res) == {"TRAP_UD": 1} and res.exceptions == [{"vector": Vector.UD, "error_code": None}]


def test_kvm_multiple_exception_promotes_and_then_shuts_down() -> None:
    from kvmsim.kvm import x86_exception

    m = make_machine(_sc(HEAD + "    EXIT 0\n"))
    try:
        vcpu = m.vcpu.vcpu
        x86_exception.kvm_queue_exception_e(vcpu, Vector.GP, 0)
        x86_exception.kvm_inject_page_fault(vcpu, 0x1000, 2)        # #GP then #PF: benign pair, #PF replaces it
        assert vcpu.arch.exception.vector == Vector.PF
        x86_exception.kvm_queue_exception_e(vcpu, Vector.GP, 0)     # #PF then #GP → #DF(0)
        exc = vcpu.arch.exception
        assert (exc.vector, exc.has_error_code, exc.error_code) == (Vector.DF, True, 0)
        x86_exception.kvm_queue_exception(vcpu, Vector.UD)          # anything during #DF → triple fault
        assert "KVM_REQ_TRIPLE_FAULT" in vcpu.requests
    finally:
        m.close()
