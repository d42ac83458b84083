"""Issue 9 points 6 and 7, reproduced on the sim and /dev/kvm, with the diagnosis.

Point 6 (exits lost after `lock mov %ebx,(mmio)` and after MOVBE with a register operand):
the static scanner (hw/scanner.py `_on_new_block`) decodes each new unicorn block with capstone,
which refuses both encodings (LOCK on MOV and MOVBE's ModRM.mod = 3 are #UD on silicon) and
silently stops decoding there; the whole block is marked scanned all the same, so no exiting
instruction after it in that block ever gets its stop hook, and unicorn runs them as it likes
(an OUT with no hook does nothing; in prot32/real16 a HLT then stops unicorn: KvmSimBug).
Nothing is lost *because of* an injected exception: with `ud2` (which capstone decodes) in the
same place, or with a `jmp` that ends the block right after the instruction, every exit arrives.
Fixed by the lead's execution-time trap (hw/trap.py replaced the scanner): the LOCK MOV runs pass.
MOVBE's register form still runs in unicorn (no #UD) until hw/fixups.py is wired into the trap.

Point 7 (FXSAVE to MMIO completes): QEMU's FXSAVE (also XSAVE, FNSAVE, FNSTENV) is a helper
that stores field by field; unicorn calls the unmapped-memory hook for every store, drops it and
carries on to the end of the translation block, so the instruction "completes" with RIP past it
and the EPT exit silicon takes on the first store is lost.  hw/fixups.py's `fxstate-mmio` stops
such an instruction whose operand is not all RAM and takes that EPT violation first; KVM's
emulator (already faithful) then makes no progress in 16/32-bit mode and fails in 64-bit mode,
as /dev/kvm does.
"""

from __future__ import annotations

import pytest

from nativecase import MARK_TRY, run, run_with_fixups, words
from kvmsim.realkvm.backend import vendor_module
from backends import BACKENDS

MODES = ["real16", "prot32", "long64"]
MMIO = {"real16": 0x8000, "prot32": 0xD0000000, "long64": 0xD0000000}


def _extra(mode: str, wall: float = 3) -> dict:
    extra = {"devices": [{"type": "debug-exit", "port": 0xF4}, {"type": "regbank", "gpa": MMIO[mode], "size": 0x1000}],
             "limits": {"wall_seconds": wall, "max_exits": 400}}
    if mode == "real16":   # RAM around a hole at 0x8000 for the register bank
        extra["memory"] = [{"gpa": 0, "size": 0x8000}, {"gpa": 0x9000, "size": 0x97000}]
    return extra


def _body(mode: str, insn: str, after: str = "") -> str:
    ptr = "(%di)" if mode == "real16" else "(%edi)"
    return (f"movl ${MMIO[mode]:#x}, %edi\n TRY {insn.format(ptr=ptr)}\n{after}"
            f"movl {ptr}, %eax\n movb $0x41, %al\n outb %al, $0xe0\n outb %al, $0xe0\n")


def _stream(r) -> list[tuple]:
    return [(e.reason, e.fields.get("port"), e.fields.get("direction")) for e in r.userspace]


LOCK_MOV = ".byte 0xf0; movl %ebx, {ptr}"
# what /dev/kvm gives: the write and the read reach the register bank, then both OUTs and EXIT 0
EXPECTED_LOCK_MOV = [("MMIO", None, None), ("MMIO", None, None), ("IO", 0xE0, 1), ("IO", 0xE0, 1), ("IO", 0xF4, 1)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_point6_exits_after_lock_mov_to_mmio(backend: str, mode: str) -> None:
    """Every exit after the LOCK MOV arrives (the stream is the emulator's: the write reaches the
    register bank, then the guest gets #UD)."""
    if backend == "kvm" and mode == "prot32" and vendor_module() == "kvm_pvm":
        # labelled kvm_pvm artefact: its emulator runs the LOCK MOV itself and fails in prot32
        r = run(_body(mode, LOCK_MOV), backend, mode, **_extra(mode))
        assert r.stop.reason == "internal-error"
        return
    r = run(_body(mode, LOCK_MOV), backend, mode, **_extra(mode))
    assert _stream(r) == EXPECTED_LOCK_MOV


@pytest.mark.parametrize("mode", MODES)
def test_point6_lock_mov_raises_ud_on_the_silicon_with_the_fixup(mode: str) -> None:
    """On VMX silicon the LOCK MOV is #UD at decode; KVM intercepts #UD (EXCEPTION_NMI) and hands
    it to its emulator (EMULTYPE_TRAP_UD), not an EPT violation.  What userspace then sees is the
    emulator's doing, the same stream as kvm_pvm's (the write reaches the register bank, the guest
    gets #UD)."""
    body = _body(mode, LOCK_MOV).replace("TRY", "MARK_TRY") + " movzbl kvmsim_fault_vector, %eax\n outl %eax, $0xe0\n"
    r, used = run_with_fixups(body, mode, **_extra(mode))
    assert used == ["lock-ud"] and r.exits.get("EXCEPTION_NMI") == 1
    assert _stream(r) == [("IO", 0xE1, 1)] + EXPECTED_LOCK_MOV[:-1] + [("IO", 0xE0, 1), ("IO", 0xF4, 1)]
    assert words(r) == [0x41, 0x41, 6]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["ud2", "block-ends"])
def test_point6_diagnosis_exits_survive_an_exception_and_a_new_block(mode: str, variant: str) -> None:
    """The controls: an injected #UD (ud2) keeps every later exit; the LOCK MOV followed by a jmp
    (so the OUTs start a block of their own, decoded from its start) loses none either."""
    if variant == "ud2":
        r = run(_body(mode, "ud2"), "sim", mode, **_extra(mode))
        assert _stream(r) == EXPECTED_LOCK_MOV[1:]
    else:
        r = run(_body(mode, LOCK_MOV, after="jmp 1f\n1:\n"), "sim", mode, **_extra(mode))
        assert _stream(r) == EXPECTED_LOCK_MOV


MOVBE_REG = ".byte 0x0f, 0x38, 0xf0, 0xc1"


@pytest.mark.parametrize("mode", ["prot32", "long64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_point6_movbe_register_form_is_ud_and_the_handler_outs_arrive(backend: str, mode: str) -> None:
    body = f"TRY {MOVBE_REG}\n movzbl kvmsim_fault_vector, %eax\n outl %eax, $0xe0\n"
    r = run(body, backend, mode, **_extra(mode))
    if backend == "kvm" and vendor_module() == "kvm_pvm":
        # labelled kvm_pvm artefact: KVM's emulator has no MOVBE register form (emulation failure)
        assert r.stop.reason == "internal-error"
        return
    assert (r.stop.reason, r.stop.code, words(r)) == ("debug-exit", 0, [6])


FXSAVE = "fxsave {ptr}"


def _fxsave_expectation(mode: str, r) -> None:
    """KVM's emulator cannot store FXSAVE's image to MMIO: in 16/32-bit mode it re-enters the guest
    on the same instruction for ever (no userspace exit after the marker OUT), in 64-bit mode the
    run ends in KVM_INTERNAL_ERROR_EMULATION."""
    if mode == "long64":
        assert _stream(r) == [("IO", 0xE1, 1), ("INTERNAL_ERROR", None, None)]
        assert r.stop.reason == "internal-error"
    else:
        assert _stream(r) == [("IO", 0xE1, 1)]
        assert r.stop.reason == "limit"


@pytest.mark.parametrize("mode", MODES)
def test_point7_fxsave_to_mmio_with_the_fixup_matches_kvm(mode: str) -> None:
    ptr = "(%di)" if mode == "real16" else "(%edi)"
    r, used = run_with_fixups(f"movl ${MMIO[mode]:#x}, %edi\n MARK_TRY fxsave {ptr}\n outb %al, $0xe0\n", mode,
                              **_extra(mode, wall=1))
    assert set(used) == {"fxstate-mmio"}
    _fxsave_expectation(mode, r)


@pytest.mark.kvm
@pytest.mark.parametrize("mode", MODES)
def test_point7_fxsave_to_mmio_on_kvm(mode: str) -> None:
    ptr = "(%di)" if mode == "real16" else "(%edi)"
    r = run(MARK_TRY + f"movl ${MMIO[mode]:#x}, %edi\n MARK_TRY fxsave {ptr}\n outb %al, $0xe0\n", "kvm", mode,
            **_extra(mode, wall=1))
    _fxsave_expectation(mode, r)


@pytest.mark.parametrize("mode", MODES)
def test_point7_fxsave_to_mmio_end_to_end_on_the_sim(mode: str) -> None:
    ptr = "(%di)" if mode == "real16" else "(%edi)"
    r = run(MARK_TRY + f"movl ${MMIO[mode]:#x}, %edi\n MARK_TRY fxsave {ptr}\n outb %al, $0xe0\n", "sim", mode,
            **_extra(mode, wall=1))
    _fxsave_expectation(mode, r)
