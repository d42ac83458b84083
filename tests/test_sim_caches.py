"""The simulator's own caches (the page walk's entries; any decode-side cache) never change what the
guest or userspace sees: rewritten code and rewritten page tables are seen at once, and a run with
probes on gives the same exits as one without."""

from __future__ import annotations

from kvmsim.trace.recorder import Recorder
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine

# The instruction at `insn` reads MMIO, then the guest rewrites it in place (movl -> movb) and runs
# it again at the same RIP: the emulator must decode the new bytes (MMIO len 4, then len 1).
REWRITE_ASM = """
        .text
        .globl _start
_start:
        movl    $0xd0000000, %ebx
insn:
        movl    (%rbx), %eax
        cmpb    $0x8a, insn(%rip)
        je      1f
        movb    $0x8a, insn(%rip)
        jmp     insn
1:      hlt
"""


def _mmio_lens(traced: bool) -> list[tuple[str, int]]:
    m = machine(REWRITE_ASM, "long64")
    rec = Recorder(functions=False).start() if traced else None
    seen = []
    try:
        for _ in range(3):
            run = kvm_run(m)
            reason = KvmExit(run.exit_reason)
            seen.append((reason.name, run.mmio.len if reason == KvmExit.MMIO else 0))
            if reason != KvmExit.MMIO:
                break
    finally:
        if rec is not None:
            rec.stop()
        m.close()
    return seen


def test_emulator_decodes_an_instruction_rewritten_at_the_same_rip() -> None:
    assert _mmio_lens(traced=False) == [("MMIO", 4), ("MMIO", 1), ("HLT", 0)]


def test_probes_on_and_off_give_the_same_exits() -> None:
    assert _mmio_lens(traced=True) == _mmio_lens(traced=False)


def test_page_walk_sees_a_rewritten_page_table_entry() -> None:
    """Translate, rewrite the leaf entry in guest RAM behind the walk's back, translate again."""
    m = machine("_start: hlt\n", "long64")
    try:
        hw = m.vcpu.vcpu.hw
        linear = 0x1000
        assert hw.walk(linear) == 0x1000          # boot's identity map
        assert hw.walk(linear) == 0x1000          # (a second walk: answered from the remembered entries)
        table, shift = hw.cr(3) & 0x000F_FFFF_FFFF_F000, 39
        while True:                               # find the leaf entry the walk reads
            at = table + 8 * ((linear >> shift) & 0x1FF)
            entry = hw.read_phys(at, 8)
            if shift == 12 or entry & 0x80:
                break
            table, shift = entry & 0x000F_FFFF_FFFF_F000, shift - 9
        size = 1 << shift
        moved = (entry & ~0x000F_FFFF_FFFF_F000) | (entry & 0x000F_FFFF_FFFF_F000) + size
        for gpa, mem in m.ram:
            if gpa <= at < gpa + len(mem):
                mem[at - gpa:at - gpa + 8] = moved.to_bytes(8, "little")
                break
        else:
            raise AssertionError("page table outside guest RAM")
        assert hw.walk(linear) == 0x1000 + size
    finally:
        m.close()
