"""Undefined status flags: the SDM table (scenario/undefined_flags.py), the walk back from the stop
RIP (scenario/last_writer.py), and `kvmsim diff` labelling them (differential.compare)."""

from __future__ import annotations

import pytest

from kvmsim.report import diff_lines, diff_summary
from kvmsim.scenario.differential import GuestCode, compare
from kvmsim.scenario.guest_build import GuestImage, build_guest
from kvmsim.scenario.last_writer import FlagWriters
from kvmsim.scenario.result import RunResult
from kvmsim.scenario.schema import Scenario
from kvmsim.scenario.undefined_flags import (AF, CF, COUNT_RULES, FLAG_EFFECTS, LEAVES_STRAIGHT_LINE,
                                             NO_STATUS_FLAGS, OF, PF, SF, STATUS, ZF, FlagEffect, flag_effect,
                                             flag_names, masked_count)
from kvmsim.vmm.exits import Stop, UserspaceExit


# ---------------------------------------------------------------- the table against the SDM's words

@pytest.mark.parametrize("mnemonic, written, undefined", [
    # AND/OR/XOR/TEST: "The OF and CF flags are cleared; the SF, ZF, and PF flags are set according
    # to the result. The state of the AF flag is undefined."
    ("and", OF | CF | SF | ZF | PF, AF), ("or", OF | CF | SF | ZF | PF, AF),
    ("xor", OF | CF | SF | ZF | PF, AF), ("test", OF | CF | SF | ZF | PF, AF),
    # MUL/IMUL: "The OF and CF flags are set to 0 if ...; The SF, ZF, AF, and PF flags are undefined."
    ("mul", OF | CF, SF | ZF | AF | PF), ("imul", OF | CF, SF | ZF | AF | PF),
    # DIV/IDIV: "The CF, OF, SF, ZF, AF, and PF flags are undefined."
    ("div", 0, STATUS), ("idiv", 0, STATUS),
    # BSF/BSR: "The ZF flag is set to 1 if the source operand is 0 ...; The CF, OF, SF, AF, and PF
    # flags are undefined."
    ("bsf", ZF, CF | OF | SF | AF | PF), ("bsr", ZF, CF | OF | SF | AF | PF),
    # BT: "The CF flag contains the value of the selected bit. The ZF flag is unaffected. The OF,
    # SF, AF, and PF flags are undefined."
    ("bt", CF, OF | SF | AF | PF), ("btc", CF, OF | SF | AF | PF),
    # AAM: "The SF, ZF, and PF flags are set ...; The OF, AF, and CF flags are undefined."
    ("aam", SF | ZF | PF, OF | AF | CF), ("aad", SF | ZF | PF, OF | AF | CF),
    # AAA: "The AF and CF flags are set to 1 if ...; The OF, SF, ZF, and PF flags are undefined."
    ("aaa", AF | CF, OF | SF | ZF | PF),
    # DAA: "The CF and AF flags are set if ...; The SF, ZF, and PF flags are set ...; The OF flag is undefined."
    ("daa", CF | AF | SF | ZF | PF, OF), ("das", CF | AF | SF | ZF | PF, OF),
    # TZCNT/LZCNT: "ZF flag is set to 1 in case of zero output ..., CF flag is set to 1 if the input
    # was zero ...; OF, SF, PF and AF flags are undefined."
    ("tzcnt", ZF | CF, OF | SF | PF | AF),
    # BEXTR: "ZF is updated based on the result. AF, SF, and PF are undefined. All other flags are cleared."
    ("bextr", ZF | CF | OF, AF | SF | PF),
    # ADD/SUB/CMP/NEG and INC/DEC (CF unaffected): nothing undefined.
    ("add", STATUS, 0), ("cmp", STATUS, 0), ("inc", STATUS & ~CF, 0), ("dec", STATUS & ~CF, 0),
])
def test_rows_say_what_the_sdm_says(mnemonic: str, written: int, undefined: int) -> None:
    assert flag_effect(mnemonic) == FlagEffect(written, undefined)


@pytest.mark.parametrize("mnemonic, count, bits, written, undefined", [
    # SHL/SHR/SAR: "If the count is 0, the flags are not affected. For a non-zero count, the AF flag is
    # undefined."  "The OF flag is affected only for 1-bit shifts; otherwise, it is undefined."
    ("shr", 0, 32, 0, 0),
    ("shr", 1, 32, CF | OF | SF | ZF | PF, AF),
    ("shr", 32, 64, CF | SF | ZF | PF, AF | OF),
    # "CF ... is undefined for SHL and SHR instructions where the count is greater than or equal to
    # the size (in bits) of the destination operand."  SAR keeps CF (the sign bit).
    ("shl", 8, 8, SF | ZF | PF, AF | OF | CF), ("shl", 7, 8, CF | SF | ZF | PF, AF | OF),
    ("sar", 9, 8, CF | SF | ZF | PF, AF | OF),
    # ROL/ROR/RCL/RCR: "If the masked count is 1, then the OF flag is affected, otherwise ... the OF
    # flag is undefined. ... The SF, ZF, AF, and PF flags are always unaffected."
    ("rol", 1, 32, CF | OF, 0), ("rcr", 5, 16, CF, OF), ("ror", 0, 8, 0, 0),
    # SHLD/SHRD: "If the count is greater than the operand size, the flags are undefined."
    ("shld", 17, 16, 0, STATUS), ("shrd", 16, 16, CF | SF | ZF | PF, AF | OF), ("shrd", 1, 32, CF | SF | ZF | PF | OF, AF),
])
def test_count_rules_say_what_the_sdm_says(mnemonic: str, count: int, bits: int, written: int, undefined: int) -> None:
    assert flag_effect(mnemonic, count, bits) == FlagEffect(written, undefined)


def test_count_is_masked_to_five_bits_or_six_with_rex_w() -> None:
    assert masked_count(0x21, 32) == 1 and masked_count(0x21, 8) == 1 and masked_count(0x41, 64) == 1
    assert masked_count(0x20, 64) == 32 and masked_count(0x20, 16) == 0


def test_a_shift_without_its_count_and_an_unknown_mnemonic_have_no_row() -> None:
    assert flag_effect("shr") is None and flag_effect("frobnicate") is None


def test_the_table_is_consistent() -> None:
    rows = set(FLAG_EFFECTS) | set(COUNT_RULES)
    assert not rows & NO_STATUS_FLAGS and not rows & LEAVES_STRAIGHT_LINE and not NO_STATUS_FLAGS & LEAVES_STRAIGHT_LINE
    for m, eff in FLAG_EFFECTS.items():
        assert not eff.written & eff.undefined and not eff.touched & ~STATUS, m
    for m, rule in COUNT_RULES.items():
        for bits in (8, 16, 32, 64):
            for count in range(masked_count(0xFF, bits) + 1):
                eff = rule(count, bits)
                assert not eff.written & eff.undefined and (eff.touched == 0) == (count == 0), (m, count, bits)
    assert flag_names(AF | OF | CF) == "CF AF OF"


# ---------------------------------------------------------------- the walk back from the stop

def _image(body: str, mode: str = "long64") -> tuple[GuestImage, int]:
    """The guest and the RIP after its last HLT (where KVM leaves a skipped HLT)."""
    img = build_guest(None, ".globl _start\n_start:\n" + body, mode)
    return img, img.load_addr + img.image.rindex(b"\xf4") + 1


def _walk(body: str, rcx: int | None = None, mode: str = "long64") -> list[tuple[str, str]]:
    img, rip = _image(body, mode)
    return [(u.mnemonic, flag_names(u.mask)) for u in FlagWriters(img).undefined_at(rip, rcx)]


def test_shr_by_32_leaves_af_and_of_undefined() -> None:
    assert _walk("movq $0x123456789, %rax\n shrq $32, %rax\n hlt\n") == [("shr", "AF OF")]


def test_a_later_instruction_that_defines_the_flags_wins() -> None:
    assert _walk("shrq $32, %rax\n addl $1, %ebx\n hlt\n") == []
    # INC defines all but CF: CF stays BSF's undefined one; moves and OUT touch nothing.
    assert _walk("bsf %ecx, %eax\n incl %ebx\n movl $1, %edx\n outb %al, $0x80\n hlt\n") == [("bsf", "CF")]
    # Each flag is named with its own last writer.
    assert _walk("bsf %ecx, %eax\n roll $3, %ebx\n hlt\n") == [("bsf", "PF AF SF"), ("rol", "OF")]
    assert _walk("bsf %ecx, %eax\n shrl $4, %ebx\n hlt\n") == [("shr", "AF OF")]   # SHR defines CF too


def test_shift_by_cl_uses_the_final_count() -> None:
    body = "andl %ebx, %eax\n shrl %cl, %edx\n hlt\n"
    assert _walk(body, rcx=1) == [("shr", "AF")]                 # 1-bit: OF defined
    assert _walk(body, rcx=0x20) == [("and", "AF")]              # masked count 0: SHR leaves the flags
    assert _walk(body, rcx=None) == []                           # count unknown: no claim
    assert _walk("shrl %cl, %edx\n movl $1, %ecx\n hlt\n", rcx=1) == []   # CL rewritten after the shift


@pytest.mark.parametrize("body", [
    "addl $1, %eax\n jmp 2f\n shrl $4, %eax\n2: hlt\n",       # the SHR is jumped over
    "shrl $4, %eax\n call 3f\n hlt\n3: ret\n",                 # what the callee ran is not on the line
    "shrl $4, %eax\nback: hlt\n",                              # a symbol may be entered from anywhere
    "divl %ecx\n2: hlt\n .long 2b\n",                          # a resume address held as data (extable)
    "shrl $4, %eax\n fninit\n hlt\n",                         # an instruction the table lacks
], ids=["jumped over", "after a call", "after a symbol", "extable resume", "unknown insn"])
def test_no_claim_where_the_path_is_not_proven(body: str) -> None:
    assert _walk(body) == []


def test_data_in_the_image_is_skipped_when_looking_for_branch_targets() -> None:
    body = "shrl $4, %eax\n hlt\n nop\nmsg: .ascii \"Unhandled\\n\"\n .byte 0xd6, 0x0f, 0x0b, 0xc4\n"
    assert _walk(body) == [("shr", "AF OF")]


def test_a_symbol_right_after_the_hlt_exit_is_passed_only_when_the_run_stopped_there() -> None:
    img, rip = _image("shrl $4, %eax\n hlt\nnext: nop\n")
    assert FlagWriters(img).undefined_at(rip, None) == []          # RIP may have been jumped to
    assert [u.mnemonic for u in FlagWriters(img).undefined_at(rip, None, after_hlt=True)] == ["shr"]


def test_entries_after_rip_do_not_cut_the_walk() -> None:
    assert _walk("shrl $4, %eax\n hlt\n jmp 1f\n1: nop\n") == [("shr", "AF OF")]


def test_rip_inside_an_instruction_or_outside_the_image_gives_nothing() -> None:
    img, rip = _image("shrq $32, %rax\n hlt\n")
    w = FlagWriters(img)
    assert w.undefined_at(rip - 2, None) == [] and w.undefined_at(img.load_addr + len(img.image) + 64, None) == []


def test_mov_to_a_control_register_leaves_every_status_flag_undefined() -> None:
    assert _walk("movq %cr0, %rax\n hlt\n") == [("mov", "CF PF AF ZF SF OF")]


def test_prot32_and_real16_decode_in_their_mode() -> None:
    assert _walk("shrl $4, %eax\n hlt\n", mode="prot32") == [("shr", "AF OF")]
    assert _walk("mulw %cx\n hlt\n", mode="real16") == [("mul", "PF AF ZF SF")]


# ---------------------------------------------------------------- kvmsim diff labels, never hides

def _sc() -> Scenario:
    return Scenario.model_validate({"name": "t", "description": "t", "guest": {"asm": "hlt", "mode": "long64"}})


def _result(backend: str, rip: int, rflags: int) -> RunResult:
    return RunResult("t", backend, Stop("hlt"), exits={}, userspace=[UserspaceExit("HLT", {})], serial="",
                     regs={"rax": 1, "rcx": 0, "rip": rip, "rflags": rflags})


SHR_GUEST = "movq $0x123456789, %rax\n shrq $32, %rax\n hlt\n"


def test_only_an_undefined_flag_differs_match_with_a_labelled_line() -> None:
    img, rip = _image(SHR_GUEST)
    c = compare(_sc(), _result("sim", rip, 0x2), _result("kvm", rip, 0x2 | AF), "kvm_pvm", GuestCode(img))
    assert c.status == "MATCH" and not c.differences
    assert [(d.path, [u.label() for u in d.undefined]) for d in c.undefined] == [
        ("regs.rflags", ["rflags AF undefined after shr (SDM)"])]
    lines = diff_lines(c)
    assert "undefined flags labelled" in lines[0]
    assert any("labelled: rflags AF undefined after shr (SDM): sim 2, kvm 0x12" in ln and "shr rax, 0x20" in ln
               for ln in lines)
    assert "1 with undefined flags labelled" in diff_summary([c], "kvm_pvm")[-1]


@pytest.mark.parametrize("kvm_rflags", [0x2 | AF | ZF, 0x2 | CF, 0x2 | SF | PF], ids=["AF and ZF", "CF", "SF PF"])
def test_a_defined_flag_that_differs_is_still_a_divergence(kvm_rflags: int) -> None:
    img, rip = _image(SHR_GUEST)
    c = compare(_sc(), _result("sim", rip, 0x2), _result("kvm", rip, kvm_rflags), "kvm_pvm", GuestCode(img))
    assert c.status == "DIFF" and [(d.path, d.sim, d.kvm) for d in c.differences] == [("regs.rflags", 0x2, kvm_rflags)]
    assert ("rflags", 0x2, kvm_rflags, "DIFF") in c.registers


def test_an_undefined_flag_of_an_instruction_that_did_not_run_last_is_a_divergence() -> None:
    img, rip = _image("shrq $32, %rax\n addq $0, %rax\n hlt\n")
    c = compare(_sc(), _result("sim", rip, 0x2), _result("kvm", rip, 0x2 | AF), "kvm_pvm", GuestCode(img))
    assert c.status == "DIFF" and not c.undefined


def test_kvm_rip_past_a_retired_out_labels_the_same_instruction() -> None:
    """kvm_pvm retires the OUT it stops on (pvm-out-retired): both walks still find the SHR."""
    img, _ = _image("shrq $32, %rax\n outb %al, $0x80\n hlt\n")
    out_rip = img.load_addr + img.image.index(b"\xe6\x80")
    io = [UserspaceExit("IO", {"direction": 1, "size": 1, "port": 0x80, "count": 1, "data": "01"})]
    sim, kvm = _result("sim", out_rip, 0x2), _result("kvm", out_rip + 2, 0x2 | AF)
    sim.userspace = kvm.userspace = io
    c = compare(_sc(), sim, kvm, "kvm_pvm", GuestCode(img))
    assert c.status == "MATCH" and [d.vendor.name for d in c.vendor] == ["pvm-out-retired"]
    assert [u.label() for d in c.undefined for u in d.undefined] == ["rflags AF undefined after shr (SDM)"]


def test_an_instruction_under_try_is_not_claimed_it_may_have_faulted() -> None:
    """kvmsim.inc's TRY resumes after the instruction through its exception table (an address held
    as data), so a DIV that raised #DE there must not be named."""
    guarded = ('.include "kvmsim.inc"\n movl $1, %ecx\n TRY divl %ecx\n hlt\n', [])
    plain = ('.include "kvmsim.inc"\n movl $1, %ecx\n divl %ecx\n hlt\n', [("div", "CF PF AF ZF SF OF")])
    for body, want in (guarded, plain):
        img = build_guest(None, ".globl _start\n_start:\n" + body, "long64")
        rip = img.load_addr + img.image.index(b"\xf7\xf1\xf4") + 3   # after `div ecx; hlt` (the library has HLTs too)
        assert [(u.mnemonic, flag_names(u.mask)) for u in FlagWriters(img).undefined_at(rip, 1, after_hlt=True)] == want, body


# Where capstone's x86 EFLAGS data (an independent table) says otherwise, the SDM text wins:
# IMUL "The SF, ZF, AF, and PF flags are undefined." (capstone omits SF); MOV CR/DR "The OF, SF,
# ZF, AF, PF, and CF flags are undefined." (capstone lists none).  Shifts and rotates are
# count-dependent here and checked above.
CAPSTONE_DISAGREES = {"imul": SF, "mov": STATUS}


@pytest.mark.parametrize("code", ["21c8", "09c8", "31c8", "85c8", "f7e1", "f7e9", "0fafc1", "f7f1", "f7f9",
                                  "0fbcc1", "0fbdc1", "0fa3c8", "0fabc8", "0fb3c8", "0fbbc8", "f30fbcc1",
                                  "f30fbdc1", "0f20c0", "0f21c0", "c4e270f2c1", "c4e278f7c1", "01c8", "ffc0"])
def test_fixed_rows_agree_with_capstones_eflags_data(code: str) -> None:
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone import x86_const as X

    from kvmsim.scenario.last_writer import effect_of

    undef_bits = {X.X86_EFLAGS_UNDEFINED_CF: CF, X.X86_EFLAGS_UNDEFINED_PF: PF, X.X86_EFLAGS_UNDEFINED_AF: AF,
                  X.X86_EFLAGS_UNDEFINED_ZF: ZF, X.X86_EFLAGS_UNDEFINED_SF: SF, X.X86_EFLAGS_UNDEFINED_OF: OF}
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    insn = next(md.disasm(bytes.fromhex(code), 0))
    capstone = sum(flag for bit, flag in undef_bits.items() if insn.eflags & bit)
    ours = effect_of(insn, None).undefined
    assert ours ^ capstone == ours & CAPSTONE_DISAGREES.get(insn.mnemonic, 0) & ~capstone, insn.mnemonic


def test_a_kvm_rip_past_a_flag_writing_instruction_is_no_ground_for_a_label() -> None:
    img, rip = _image("shrq $32, %rax\n addl $1, %ebx\n hlt\n")
    add_rip = img.load_addr + img.image.index(b"\x83\xc3\x01")
    c = compare(_sc(), _result("sim", add_rip, 0x2), _result("kvm", add_rip + 3, 0x2 | AF), "kvm_pvm", GuestCode(img))
    assert c.status == "DIFF" and not c.undefined and {d.path for d in c.differences} == {"regs.rip", "regs.rflags"}


def test_no_label_when_the_final_mode_is_not_the_images() -> None:
    """A guest that left the mode it was built for would be decoded wrongly: no claim."""
    img, rip = _image(SHR_GUEST)
    sim, kvm = _result("sim", rip, 0x2), _result("kvm", rip, 0x2 | AF)
    for r in (sim, kvm):
        r.sregs = {"cr0": 0x80000011, "efer": 0x500}            # long mode: the image's
    assert compare(_sc(), sim, kvm, "kvm_pvm", GuestCode(img)).status == "MATCH"
    for r in (sim, kvm):
        r.sregs = {"cr0": 0x11, "efer": 0}                      # protected mode, no LMA
    assert compare(_sc(), sim, kvm, "kvm_pvm", GuestCode(img)).status == "DIFF"
