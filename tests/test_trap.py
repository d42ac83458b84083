"""The silicon traps exiting instructions when the CPU executes them (hw/trap.py): the exit
arrives wherever the bytes came from (assembled, copied at run time, rewritten in place), whatever
bytes precede them, and wherever control enters; and never where the CPU does not start an
instruction.  Each test runs the guest on the silicon alone (`enter_guest`) and reads the VMCS exit
fields, as a CPU test bench would."""

from __future__ import annotations

import pytest
from kvmsim.hw.exits import CANDIDATE, Action, classify
from kvmsim.hw.vmcs import ExitReason
from tests.simvm import machine

R = ExitReason
MODES = ("long64", "prot32", "real16")
CPU_MODES = ("long64", "prot32", "real")

# Instruction (GNU as syntax) -> the exit reason the CPU reports when it reaches it.
EXITING = [
    ("outb %al, $0x80", R.IO_INSTRUCTION), ("inb $0x80, %al", R.IO_INSTRUCTION),
    ("outw %ax, %dx", R.IO_INSTRUCTION), ("inl %dx, %eax", R.IO_INSTRUCTION),
    ("rep outsb", R.IO_INSTRUCTION), ("insw", R.IO_INSTRUCTION),
    ("hlt", R.HLT), ("cpuid", R.CPUID), ("rdmsr", R.MSR_READ), ("wrmsr", R.MSR_WRITE),
    ("vmcall", R.VMCALL), ("invd", R.INVD), ("wbinvd", R.WBINVD), ("xsetbv", R.XSETBV),
    ("rdpmc", R.RDPMC), ("monitor", R.MONITOR_INSTRUCTION), ("mwait", R.MWAIT_INSTRUCTION),
    ("vmlaunch", R.VMLAUNCH), ("vmresume", R.VMRESUME), ("vmxoff", R.VMOFF), ("vmfunc", R.VMFUNC),
    ("vmptrld (%esi)", R.VMPTRLD), ("vmclear (%esi)", R.VMCLEAR), ("vmptrst (%esi)", R.VMPTRST),
    ("vmxon (%esi)", R.VMON),
]
# Prefixes that do not change what the instruction is.
PREFIXED = [(".byte 0x2e; outb %al, $0x80", R.IO_INSTRUCTION), (".byte 0x3e, 0x2e; hlt", R.HLT),
            (".byte 0x66; outb %al, $0x80", R.IO_INSTRUCTION)]


def _exit_reason(asm: str, mode: str) -> int:
    m = machine(asm, mode)
    try:
        hw = m.vcpu.vcpu.hw
        hw.enter_guest()
        return hw.vmcs.vm_exit_reason
    finally:
        m.close()


def _guest(body: str) -> str:
    return f"""
        .include "kvmsim.inc"
        GUEST_ENTRY
        {body}
        """


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("insn,reason", EXITING + PREFIXED, ids=[i for i, _ in EXITING + PREFIXED])
def test_exiting_instruction_exits_where_assembled(insn: str, reason: ExitReason, mode: str) -> None:
    if mode == "real16":
        insn = insn.replace("%esi", "%si")
        if insn.startswith("vm") and insn not in ("vmcall", "vmfunc"):
            reason = R.EXCEPTION_NMI   # VMX instructions are #UD in real mode, before any exit
    assert _exit_reason(_guest(f"nop\n target: {insn}"), mode) == reason


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("insn,reason", EXITING[:12], ids=[i for i, _ in EXITING[:12]])
def test_exiting_instruction_exits_when_copied_at_run_time(insn: str, reason: ExitReason, mode: str) -> None:
    """As kvm-unit-tests' realmode.flat does: the instruction's bytes are copied into a buffer on a
    page never executed before, then run."""
    mov = {"long64": "movq $buf, %rdi; movq $src, %rsi; movq $(src_end - src), %rcx",
           "prot32": "movl $buf, %edi; movl $src, %esi; movl $(src_end - src), %ecx",
           "real16": "movw $buf, %di; movw $src, %si; movw $(src_end - src), %cx"}[mode]
    asm = _guest(f"""
        cld
        {mov}
        rep movsb
        jmp buf
src:    {insn}
src_end:
        .data
        .balign 4096
buf:    .fill 32, 1, 0x90
        """)
    assert _exit_reason(asm, mode) == reason


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("junk", ["0xdd,0xc9", "0xdf,0xd0", "0xdc,0xd1", "0x0f,0x1e,0xc0", "0xd9,0xd0"])
def test_bytes_no_disassembler_knows_do_not_hide_the_next_exit(junk: str, mode: str) -> None:
    assert _exit_reason(_guest(f".byte {junk}\n outb %al, $0x80"), mode) == R.IO_INSTRUCTION


@pytest.mark.parametrize("mode", MODES)
def test_an_out_inside_an_immediate_exits_only_when_jumped_into(mode: str) -> None:
    """`mov $0xee, %ah` is b4 ee: run from its start it is a MOV; entered one byte in, it is OUT."""
    into = _guest("jmp hidden + 1\n hidden: movb $0xee, %ah\n hlt")
    over = _guest("hidden: movb $0xee, %ah\n hlt")
    assert _exit_reason(into, mode) == R.IO_INSTRUCTION
    assert _exit_reason(over, mode) == R.HLT


@pytest.mark.parametrize("mode", ["long64", "prot32"])
def test_code_rewritten_in_place_exits_as_its_new_bytes(mode: str) -> None:
    """The same address runs as OUT, then (rewritten by the guest) as IN: two different exits."""
    asm = _guest("""
        movb    $0xee, buf
        call    buf
        movb    $0xec, buf
        call    buf
        hlt
buf:    nop
        ret
        """)
    m = machine(asm, mode)
    try:
        hw = m.vcpu.vcpu.hw
        seen = []
        for _ in range(2):
            hw.enter_guest()
            assert hw.vmcs.vm_exit_reason == R.IO_INSTRUCTION
            seen.append(hw.vmcs.exit_qualification & 8)      # bit 3: IN
            hw.set_reg("rip", hw.reg("rip") + hw.vmcs.vm_exit_instruction_len)
        assert seen == [0, 8]
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.HLT
    finally:
        m.close()


def test_a_store_that_rewrites_the_rest_of_its_own_block_exits() -> None:
    """The store writes an OUT two bytes ahead in the block it is running in."""
    asm = _guest("""
        movw    $0x90ee, next(%rip)
next:   nop
        nop
        hlt
        """)
    assert _exit_reason(asm, "long64") == R.IO_INSTRUCTION


def test_8f_with_a_nonzero_reg_field_is_ud_on_intel() -> None:
    """unicorn runs 8F /1-7 as POP; Intel raises #UD, which KVM intercepts (exception bitmap)."""
    m = machine(_guest(".byte 0x8f, 0xee\n hlt"), "long64")
    try:
        hw = m.vcpu.vcpu.hw
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.EXCEPTION_NMI
        assert hw.vmcs.vm_exit_intr_info & 0xFF == 6
    finally:
        m.close()


def test_the_candidate_pattern_admits_any_prefix_run() -> None:
    """Prefixes (and REX bytes, which are INC/DEC outside 64-bit mode) before an exiting opcode."""
    for mode in CPU_MODES:
        for code in (b"\xee", b"\x66\xef", b"\x0f\x01\xc1", b"\x0f\xa2", b"\xf4"):
            for pre in (b"", b"\x2e", b"\x66\x67", b"\x48"):
                assert CANDIDATE.match(pre + code)
                if pre != b"\x48" or mode == "long64":
                    assert classify(pre + code + b"\x90" * 14, mode)[0] is not None


def test_lock_on_an_exiting_instruction_is_ud_before_any_exit() -> None:
    spec, _, _ = classify(b"\xf0\xee" + b"\x90" * 13, "long64")
    assert spec is not None and spec.action is Action.UD


# ---------------------------------------------------------------- MOV CR / MOV DR (ctrlregs.py)

def _first_exit(asm: str, mode: str = "long64"):
    m = machine(_guest(asm), mode)
    hw = m.vcpu.vcpu.hw
    hw.enter_guest()
    return m, hw


@pytest.mark.parametrize("mode", ["long64", "prot32"])
def test_mov_to_cr0_changing_a_host_owned_bit_exits_with_its_qualification(mode: str) -> None:
    reg = "%rdx" if mode == "long64" else "%edx"
    m, hw = _first_exit(f"mov %cr0, {reg}\n xor $0x40000000, {reg}\n mov {reg}, %cr0\n hlt", mode)   # CR0.CD
    try:
        assert hw.vmcs.vm_exit_reason == R.CR_ACCESS
        q = hw.vmcs.exit_qualification
        assert (q & 0xF, (q >> 4) & 3, (q >> 8) & 0xF) == (0, 0, 2)        # CR0, MOV to CR, RDX
        assert hw.vmcs.vm_exit_instruction_len == 3
    finally:
        m.close()


def test_mov_from_cr0_reads_the_read_shadow_for_host_owned_bits() -> None:
    m = machine(_guest("mov %cr0, %rbx\n hlt"), "long64")
    try:
        hw = m.vcpu.vcpu.hw
        hw.vmcs.cr0_read_shadow ^= 1 << 30                 # a host-owned bit the CPU does not have
        assert hw.vmcs.cr0_guest_host_mask & (1 << 30)
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.HLT
        assert hw.reg("rbx") == (hw.cr(0) & ~hw.vmcs.cr0_guest_host_mask) | (
            hw.vmcs.cr0_read_shadow & hw.vmcs.cr0_guest_host_mask)
        assert (hw.reg("rbx") ^ hw.cr(0)) & (1 << 30)
    finally:
        m.close()


@pytest.mark.parametrize("insn,reason,qual", [
    ("mov %rax, %cr8", R.CR_ACCESS, 0x08), ("mov %cr8, %rcx", R.CR_ACCESS, 0x118),
    ("mov %rbx, %dr7", R.DR_ACCESS, 0x307), ("mov %dr6, %rsi", R.DR_ACCESS, 0x616),
])
def test_cr8_and_dr_accesses_exit(insn: str, reason: ExitReason, qual: int) -> None:
    m, hw = _first_exit(f"{insn}\n hlt")
    try:
        assert (hw.vmcs.vm_exit_reason, hw.vmcs.exit_qualification) == (reason, qual)
    finally:
        m.close()


def test_clts_runs_natively_while_the_guest_owns_cr0_ts() -> None:
    m, hw = _first_exit("mov %cr0, %rax\n or $8, %rax\n mov %rax, %cr0\n clts\n mov %cr0, %rbx\n hlt")
    try:
        assert hw.vmcs.vm_exit_reason == R.HLT and not hw.reg("rbx") & 8
    finally:
        m.close()


def test_sldt_in_real_mode_is_ud_before_a_descriptor_table_exit() -> None:
    """SLDT is a candidate while descriptor-table exiting is on; in real mode it is #UD, which
    comes before the exit."""
    from kvmsim.hw.vmcs import SECONDARY_EXEC_DESC
    m = machine(_guest(".byte 0x0f, 0x00, 0x00\n hlt"), "real16")
    try:
        hw = m.vcpu.vcpu.hw
        hw.vmcs.secondary_vm_exec_control |= SECONDARY_EXEC_DESC
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.EXCEPTION_NMI and hw.vmcs.vm_exit_intr_info & 0xFF == 6
    finally:
        m.close()


def test_read_only_segment_check_is_armed_only_while_one_is_loaded() -> None:
    """The per-instruction check (segcheck.py) costs a hook on every instruction: it must be off
    in ordinary code and come off again when the read-only descriptor is replaced."""
    m = machine(_guest("hlt"), "prot32")
    try:
        hw = m.vcpu.vcpu.hw
        hw.enter_guest()
        assert hw._ro_hook is None and hw._ro_segs == frozenset()
    finally:
        m.close()


def test_a_pause_spin_loop_takes_a_pause_loop_exit() -> None:
    """With PAUSE-loop exiting on (KVM's default where ple_gap != 0), a loop of PAUSEs exits once
    it has spun past PLE_Window; PAUSEs elsewhere run natively."""
    m = machine(_guest("spin: pause\n jmp spin"), "long64")
    try:
        hw = m.vcpu.vcpu.hw
        from kvmsim.hw.vmcs import SECONDARY_EXEC_PAUSE_LOOP_EXITING
        assert hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_PAUSE_LOOP_EXITING
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.PAUSE_INSTRUCTION and hw.vmcs.vm_exit_instruction_len == 2
    finally:
        m.close()


def test_code_on_the_second_highest_page_exits_on_its_first_entry() -> None:
    """kvm-unit-tests' ISR stubs live at 0xffffffffffffe000: a block there is the first on a page
    whose next page is the last of the address space.  The guest maps that 2 MiB region onto
    GPA 0 (PML4[511] -> PDPT[511] -> a PD at 0x20000), writes NOP; OUT; HLT there and
    jumps in: the first entry exits at the OUT, and the OUT ran nowhere before it."""
    asm = _guest("""
        movq    $0x20000, %rdi
        xorl    %eax, %eax
        movl    $512, %ecx
        rep stosq                                  # a zeroed PD at 0x20000
        movq    $0x83, 0x20000 + 511*8             # PD[511]: the 2 MiB page at GPA 0
        movq    $(0x20000 | 3), 0x5000 + 511*8       # PDPT[511] -> the PD
        movq    $(0x5000 | 3), 0x4000 + 511*8        # PML4[511] -> the PDPT
        movq    %cr3, %rax
        movq    %rax, %cr3
        movl    $0xf4f1e690, 0x1fe000              # nop; outb %al, $0xf1; hlt
        movb    $0x42, %al
        movabsq $0xffffffffffffe000, %rbx
        jmp     *%rbx
        """)
    m = machine(asm, "long64")
    try:
        hw = m.vcpu.vcpu.hw
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.IO_INSTRUCTION
        assert hw.vmcs.exit_qualification >> 16 == 0xf1
        assert hw.reg("rip") == 0xffffffffffffe001
    finally:
        m.close()


def _two_page_loop(sweep_every: int, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, int | None, list[int]]:
    """A loop on one page calling CPUID on another 40 times: the exit counts, the retired
    instructions and the pages each sweep dropped, with a sweep every `sweep_every` exits."""
    from kvmsim.hw import trap
    from kvmsim.scenario.runner import make_machine, run_machine
    from tests.simvm import scenario
    monkeypatch.setattr(trap, "SWEEP_EVERY_EXITS", sweep_every)
    dropped = []
    real = trap.InsnTrap.sweep_pages

    def spy(self: trap.InsnTrap, keep: int) -> None:
        before = len(self._pages)
        real(self, keep)
        dropped.append(before - len(self._pages))

    monkeypatch.setattr(trap.InsnTrap, "sweep_pages", spy)
    m = make_machine(scenario("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        movl $40, %esi
    1:  call far_cpuid
        decl %esi
        jnz 1b
        EXIT 0
        .p2align 12
        .skip 4096
    far_cpuid:
        xorl %eax, %eax
        cpuid
        ret
    """, devices=[{"type": "debug-exit", "port": 0xF4}], limits={"max_guest_insns": 1_000_000}))
    with m:
        res = run_machine(m)
        assert res.stop.reason == "debug-exit", res.stop
        return res.exits, res.guest_insns, dropped


def test_a_sweep_of_the_scanned_pages_changes_no_exit_and_no_count(monkeypatch: pytest.MonkeyPatch) -> None:
    swept = _two_page_loop(7, monkeypatch)
    kept = _two_page_loop(1 << 30, monkeypatch)
    assert swept[:2] == kept[:2]
    assert swept[0]["CPUID"] == 40
    assert kept[2] == [] and len(swept[2]) == 40 // 7
    assert all(n >= 1 for n in swept[2])          # the loop's page goes at each sweep (CPUID's stays)


def _hooked(hw) -> set[int]:
    return {a for page in hw._pages.values() for a in page.hooks}


def test_only_instructions_that_run_are_hooked() -> None:
    """Candidate bytes that never start an instruction the CPU runs -- an uncalled function, data,
    the ModRM of `mov %esp, %ebp` (E5) -- get no stop hook: unicorn walks every code hook at every
    counted instruction.  The CPUID that runs is hooked and exits."""
    m = machine(_guest("""
        movl    %esp, %ebp               # 89 E5: E5 is IN's opcode, inside another instruction
        cpuid
        hlt
    never:
        inb     $0x42, %al
        outb    %al, $0x80
    data:
        .byte   0xe4, 0xec, 0xee, 0xcc, 0x0f, 0xa2, 0x6c, 0x6d, 0x6e, 0x6f
        """), "long64")
    try:
        hw = m.vcpu.vcpu.hw
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.CPUID
        rip = hw.reg("rip")
        code = hw.read_linear_bytes(rip, 32)
        hooked = _hooked(hw)
        assert rip in hooked                                            # the CPUID
        candidates = {rip + m_.start() for m_ in CANDIDATE.finditer(code)}
        assert len(candidates) > 8                                      # the page is full of them...
        assert hooked & candidates == {rip, rip + 2}                    # ...only CPUID and the HLT after it
    finally:
        m.close()


def test_code_rewritten_in_place_loses_its_stop_hook() -> None:
    """A position hooked for an exiting instruction and then overwritten by the guest with an
    ordinary one stops the CPU no more (realmode.flat's test_insn buffer runs a million times)."""
    m = machine(_guest("""
        movb    $0x90, %al
        movb    $0x90, buf + 1           # buf: OUT becomes two NOPs on the second round
        movl    $2, %ecx
    1:  call    buf
        movb    $0x90, buf
        decl    %ecx
        jnz     1b
        cpuid
    buf:
        outb    %al, $0x80
        ret
        """), "long64")
    try:
        hw = m.vcpu.vcpu.hw
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.IO_INSTRUCTION                # the first call's OUT
        out_at = hw.reg("rip")
        assert out_at in _hooked(hw)
        hw.set_reg("rip", out_at + 2)
        hw.enter_guest()
        assert hw.vmcs.vm_exit_reason == R.CPUID                        # the second call ran NOPs
        assert out_at not in _hooked(hw)
    finally:
        m.close()
