"""`kvmsim debug -x COMMANDS`: what a person sees, asserted on the printed screen."""

from __future__ import annotations

import re

import pytest

from conftest import LOOP, REPO
from kvmsim import cli
from kvmsim.debug.repl import DebugShell

MMIO = str(REPO / "scenarios/mmio-read-no-decode.yaml")


def session(tmp_path, capsys, commands: str, scenario: str = MMIO, batch: bool = True) -> str:
    script = tmp_path / "cmds"
    script.write_text(commands)
    status = cli.main(["debug", scenario, "-x", str(script)] + (["--batch"] if batch else []))
    out = capsys.readouterr().out
    assert status == 0, out
    return out


def block(out: str, command: str) -> str:
    """The output of one command: from its prompt line to the next prompt."""
    start = out.index(f"(kvmsim) {command}\n") + len(f"(kvmsim) {command}\n")
    end = out.find("(kvmsim) ", start)
    return out[start:end if end >= 0 else None]


def test_stop_at_mmio_exit_vmcs_stages_ctxt_bt(tmp_path, capsys):
    out = session(tmp_path, capsys, "break gpa 0xd0000000-0xd0000fff\nc\nvmcs\n" + "s\n" * 7 + "bt\nctxt\n")
    stop = block(out, "c")
    assert stop.startswith("Breakpoint 1, [vm-exit] kvm_exit: vcpu 0 reason EPT_VIOLATION rip 0x10000a")
    vmcs = block(out, "vmcs")
    assert re.search(r"exit qualification 0x0+181  \[read gva_valid gva_translated\]", vmcs)
    assert "guest physical     0xd0000000" in vmcs and "instruction length 2" in vmcs
    stages = re.findall(r"^\[([a-z-]+)\] (\S+?)[(:]", out, re.M)
    assert stages == [("exit-handler", "handle_ept_violation"), ("emulator-decode", "x86_decode_insn"),
                      ("emulator-execute", "x86_emulate_insn"), ("userspace-exit", "kvm_userspace_exit"),
                      ("complete-userspace-io", "complete_emulated_mmio"), ("emulator-execute", "x86_emulate_insn"),
                      ("vm-entry", "kvm_entry")]
    ctxt = block(out, "ctxt")
    assert "opcode 8b" in ctxt and "execute em_mov" in ctxt and "Dst=OpReg Src=OpMem" in ctxt
    assert re.search(r"dst\s+OP_REG bytes 4 reg rdx", ctxt) and re.search(r"src\s+OP_MEM bytes 4 ds:0xd0000000", ctxt)
    assert "fragment 0: gpa 0xd0000000 len 4" in ctxt
    assert block(out, "bt").splitlines() == ["#0  vmx_vcpu_run", "#1  vcpu_enter_guest", "#2  vcpu_run",
                                             "#3  kvm_arch_vcpu_ioctl_run", "#4  guest 0x10000c <_start+0xc>  (long64)"]


def test_bt_inside_the_no_decode_completion(tmp_path, capsys):
    out = session(tmp_path, capsys, "break emultype NO_DECODE\nc\nbt\n")
    assert "x86_emulate_instruction(emulation_type=0x1 (NO_DECODE))" in block(out, "c")
    assert block(out, "bt").splitlines()[:4] == ["#0  x86_emulate_instruction", "#1  kvm_emulate_instruction",
                                                 "#2  complete_emulated_mmio", "#3  kvm_arch_vcpu_ioctl_run"]


def test_set_reg_changes_what_the_guest_then_does(tmp_path, capsys):
    out = session(tmp_path, capsys, "break *0x10000c\nc\nset reg rbx 0xd0000010\ndelete\nc\nregs\n")
    assert "rbx = 0xd0000010" in out
    assert "run ended: debug-exit 0" in out
    regs = block(out, "regs")
    # the second read went to 0xd0000014 (an unset regbank word) instead of 0xd0000004 (0xcafe)
    assert re.search(r"rcx 0000000000000000", regs) and re.search(r"rdx 0000000000001234", regs)


def test_bad_commands_keep_the_session_alive(tmp_path, capsys):
    out = session(tmp_path, capsys, "frobnicate\nbreak exit NOPE\nbreak\nx/4xb nowhere_symbol\nignore 9 1\n"
                                    "set reg xyz 1\ninject irq\nkvm_run set nope 1\nuntil (\nbreak port 0xf4\nc\n")
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 9, out
    assert "error: unknown command 'frobnicate'" in out
    assert not any("Traceback" in line for line in out.splitlines())
    assert "Breakpoint 1, [vm-exit] kvm_exit: vcpu 0 reason IO_INSTRUCTION" in block(out, "c")


def test_memory_disas_trace_info_and_kvm_run_set(tmp_path, capsys):
    out = session(tmp_path, capsys, "break userspace mmio\nc\nkvm_run set mmio.data 78563412\nx/2xw _start\n"
                                    "x/2i $rip\ndisas _start 2\ntrace 3\ninfo exits\ninfo break\ndelete\nc\nregs\n")
    assert "kvm_run mmio.data: set when the VMM calls KVM_RUN again" in out
    assert block(out, "x/2xw _start").strip() == "0x100000: 0x0000bb48 0x0000d000"   # 48 bb 00 00 00 d0 00 00
    assert block(out, "x/2i $rip").splitlines()[0].startswith("=> 0x10000a <_start+0xa>")
    assert "movabs rbx, 0xd0000000" in block(out, "disas _start 2")
    assert "kvm_userspace_exit: reason KVM_EXIT_MMIO" in block(out, "trace 3")
    assert "EPT_VIOLATION            1" in block(out, "info exits")
    assert re.search(r"^1\s+break\s+y\s+1\s+userspace mmio$", block(out, "info break"), re.M)
    assert "rdx 0000000012345678" in block(out, "regs")


def test_stepi_and_guest_breakpoints_through_the_prompt(tmp_path, capsys):
    guest = tmp_path / "loop.S"
    guest.write_text('.include "kvmsim.inc"\n.globl _start\n' + LOOP)
    script = tmp_path / "cmds"
    script.write_text("break loop if regs.rcx == 3\nc\nsi\nsi\np regs.rcx\ninfo break\n")
    status = cli.main(["debug", "--guest", str(guest), "--mode", "long64", "-x", str(script), "--batch"])
    out = capsys.readouterr().out
    assert status == 0
    assert "Breakpoint 1, guest at 0x100005 <loop>" in block(out, "c")
    assert block(out, "p regs.rcx").strip() == "0x2 (2)"
    assert re.search(r"^1\s+break\s+y\s+1\s+rip 0x100005 <loop>$", block(out, "info break"), re.M)
    assert "stop only if regs.rcx == 3" in out


def test_every_command_has_help():
    names = [n[3:] for n in dir(DebugShell) if n.startswith("do_") and n != "do_EOF"]
    for name in names:
        doc = getattr(DebugShell, f"do_{name}").__doc__
        assert doc and len(doc.strip()) > 10, name
    assert {"continue", "next", "step", "stepi", "finish", "until", "run", "break", "tbreak", "condition", "ignore",
            "delete", "disable", "enable", "info", "regs", "sregs", "vmcs", "kvm_run", "ctxt", "bt", "x", "disas",
            "trace", "display", "set", "inject", "device"} <= set(names)


@pytest.mark.parametrize("argv,why", [
    (["debug"], "needs a scenario file"),
    (["debug", MMIO, "--batch"], "--batch goes with -x"),
    (["debug", "--mode", "long64", MMIO], "--mode applies only"),
])
def test_usage_errors_are_status_2(argv, why, capsys):
    assert cli.main(argv) == 2
    assert why in capsys.readouterr().err


def test_until_run_display_and_print(tmp_path, capsys):
    guest = tmp_path / "loop.S"
    guest.write_text('.include "kvmsim.inc"\n.globl _start\n' + LOOP)
    script = tmp_path / "cmds"
    script.write_text("display regs.rcx\nuntil regs.rcx == 2 and ev.name == 'kvm_exit'\np vmcs.exit_qualification >> 16\n"
                      "run\ntrace 2\nc\n")
    status = cli.main(["debug", "--guest", str(guest), "--mode", "long64", "-x", str(script), "--batch"])
    out = capsys.readouterr().out
    assert status == 0
    until = block(out, "until regs.rcx == 2 and ev.name == 'kvm_exit'")
    assert until.startswith("[vm-exit] kvm_exit: vcpu 0 reason IO_INSTRUCTION") and "1: regs.rcx = 0x2 (2)" in until
    assert block(out, "p vmcs.exit_qualification >> 16").strip() == "0x80 (128)"      # the port
    assert block(out, "run").startswith("stopped before the first KVM_RUN at 0x100000 <_start>")
    assert "no events recorded" in block(out, "trace 2")                    # a fresh run, nothing watched yet
    assert "run ended: debug-exit 0" in block(out, "c") and "IO_INSTRUCTION 6" in block(out, "c")
