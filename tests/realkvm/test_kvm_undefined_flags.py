"""sim vs the real /dev/kvm on guests whose last flag-writing instruction leaves flags undefined:
`kvmsim diff` says MATCH and names each differing undefined flag with the instruction (SDM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.realkvm.backend import vendor_module
from kvmsim.report import diff_lines
from kvmsim.scenario.differential import diff_scenario
from kvmsim.scenario.schema import Scenario
from kvmsim.scenario.undefined_flags import flag_names

pytestmark = pytest.mark.kvm

ROOT = Path(__file__).resolve().parents[2]

# name -> (guest body before HLT, the instruction the walk must name)
GUESTS = {
    "shr": ("movq $0x123456789, %rax\n shrq $32, %rax\n", "shr"),
    "div": ("movl $7, %eax\n xorl %edx, %edx\n movl $2, %ecx\n divl %ecx\n", "div"),
    "mul": ("movl $0x12345, %eax\n movl $0x10001, %ecx\n mull %ecx\n", "mul"),
    "bsf": ("movl $0x80, %ecx\n bsfl %ecx, %eax\n", "bsf"),
    "and": ("movl $0x0f0f, %eax\n andl $0x3c, %eax\n", "and"),
    "rol-by-cl": ("movl $0x81234567, %eax\n movb $5, %cl\n roll %cl, %eax\n", "rol"),
}


def _scenario(name: str, body: str) -> Scenario:
    return Scenario.model_validate({"name": f"undefined-flags-{name}", "description": f"{name} then hlt",
                                    "guest": {"asm": f".globl _start\n_start:\n {body} hlt\n", "mode": "long64"},
                                    "expect": {"stop": {"reason": "hlt"}}}, context={"base_dir": ROOT})


@pytest.mark.parametrize("name", GUESTS)
def test_undefined_flags_alone_match_and_are_labelled(name: str) -> None:
    body, mnemonic = GUESTS[name]
    c = diff_scenario(_scenario(name, body), vendor_module())
    assert c.status == "MATCH", "\n".join(diff_lines(c))
    for d in c.undefined:   # the host may agree with unicorn; where it does not, the label names why
        for u in d.undefined:
            assert u.mnemonic == mnemonic and u.mask & (d.sim ^ d.kvm) == u.mask, u.label()
            assert f"labelled: rflags {flag_names(u.mask)} undefined after {mnemonic} (SDM)" in "\n".join(diff_lines(c))


def test_cli_diff_prints_the_labelled_line_for_shr(tmp_path, capsys) -> None:
    """The issue's reproducer: `shrq $32,%rax` gave `regs.rflags: sim 6 != kvm 0x16`."""
    f = tmp_path / "shr.yaml"
    f.write_text("name: shr-af\ndescription: AF after SHR is undefined\n"
                 "guest:\n  mode: long64\n  asm: |\n    .globl _start\n    _start:\n"
                 "      movq $0x123456789, %rax\n      shrq $32, %rax\n      hlt\n")
    assert main(["diff", str(f)]) == 0
    out = capsys.readouterr().out
    assert "MATCH  shr-af" in out and "1 compared, 1 MATCH" in out
    if "labelled:" in out:
        assert "labelled: rflags AF undefined after shr (SDM)" in out
