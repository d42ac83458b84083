"""#DB as kvm-unit-tests' debug test sees it: KVM intercepts #DB always, so every #DB the silicon
raises is a VM exit whose qualification carries the DR6 bits; KVM queues the #DB with them as
payload and DR6 then reads as the CPU would have written it (kvm_deliver_exception_payload).

* TF single-step: one instruction after POPF sets TF, a #DB after every instruction, RIP past it,
  DR6 = active-low bits | BS; an exiting instruction (CPUID) single-steps through KVM's skip.
* ICEBP (0xf1): a trap-like #DB with no DR6 condition bit (DR6 = 0xffff0ff0), RIP past it.
* An IRET to CPL3 nulls GS (its DPL 0 is below the new CPL) but keeps its base (64-bit code still
  addresses through it); QEMU 5 zeroes the base.
Differential: the same guests on /dev/kvm.
"""

from __future__ import annotations

import pytest

from backends import BACKENDS
from kvmsim.realkvm.backend import vendor_module
from nativecase import reported

DR6_ACTIVE_LOW, DR6_BS = 0xFFFF0FF0, 1 << 14

# A #DB handler that logs (RIP - the label `base`, DR6) pairs; DR6 is cleared after each read.
DB_LOG = """
        SET_IDT_HANDLER 1, db_handler
        movl    $0, nlog
        xorl    %eax, %eax
        movq    %rax, %dr6
        jmp     body
db_handler:
        pushq   %rax
        pushq   %rbx
        movl    nlog, %ebx
        movq    16(%rsp), %rax
        subq    $base, %rax
        movl    %eax, log(,%rbx,8)
        movq    %dr6, %rax
        movl    %eax, log+4(,%rbx,8)
        xorl    %eax, %eax
        movq    %rax, %dr6
        incl    nlog
        popq    %rbx
        popq    %rax
        iretq
        .balign 8
nlog:   .long 0
        .balign 8
log:    .fill 32, 4, 0
body:
"""

REPORT_LOG = """
        movl    nlog, %eax
        outl    %eax, $0xe0
        xorl    %ecx, %ecx
2:      cmpl    nlog, %ecx
        jae     3f
        movl    log(,%rcx,8), %eax
        outl    %eax, $0xe0
        movl    log+4(,%rcx,8), %eax
        outl    %eax, $0xe0
        incl    %ecx
        jmp     2b
3:
"""

SINGLE_STEP = DB_LOG + """
        pushfq
        popq    %rax
        orq     $(1 << 8), %rax
        pushq   %rax
        andq    $~(1 << 8), %rax
        popfq
base:   pushq   %rax                        # 1 byte: #DB after it (TF's one-instruction delay)
        xorl    %eax, %eax                  # 2 bytes
        cpuid                               # 2 bytes: a CPUID exit, KVM's skip single-steps it
        popfq                               # 1 byte: clears TF, still single-stepped
""" + REPORT_LOG

ICEBP = DB_LOG + """
        nop
        .byte   0xf1
base:   nop
""" + REPORT_LOG


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_step_db_sets_bs_after_each_instruction(backend: str) -> None:
    ss = DR6_ACTIVE_LOW | DR6_BS
    assert reported(SINGLE_STEP, backend) == [4, 1, ss, 3, ss, 5, ss, 6, ss]


@pytest.mark.parametrize("backend", BACKENDS)
def test_icebp_is_a_trap_with_no_dr6_condition(backend: str) -> None:
    if backend == "kvm" and vendor_module() == "kvm_pvm":
        # kvm_pvm artefact: its emulator, which runs every CPL0 instruction, fails on ICEBP.
        with pytest.raises(AssertionError, match="internal-error"):
            reported(ICEBP, backend)
        return
    assert reported(ICEBP, backend) == [1, 0, DR6_ACTIVE_LOW]


GS_BASE_AFTER_IRET = """
        CPL3_IOMAP_DENY_ALL
        andb    $0xf0, TSS + IOMAP + 0xe0/8             # ports 0xe0-0xe3: the 32-bit report OUT
        andb    $0x0f, TSS + IOMAP + KVMSIM_EXIT_PORT/8
        movl    $0x5a5a1234, 0x90108
        movl    $0x10, %eax
        movw    %ax, %gs                                # a DPL 0 data segment
        movl    $0xc0000101, %ecx                       # MSR_GS_BASE
        movl    $0x90100, %eax
        xorl    %edx, %edx
        wrmsr
        CPL3_ENTER user
user:
        movl    %gs:8, %eax                             # through the kept base
        outl    %eax, $0xe0
        movw    %gs, %ax
        movzwl  %ax, %eax
        outl    %eax, $0xe0                             # the nulled selector
        .pushsection .data
        CPL3_GDT
        .popsection
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_iret_to_ring3_nulls_gs_but_keeps_its_base(backend: str) -> None:
    assert reported(GS_BASE_AFTER_IRET, backend) == [0x5A5A1234, 0]


# An instruction breakpoint (DR0, execute, enabled in DR7): a fault-like #DB with RIP at the
# instruction and DR6.B0; the handler sets RF in the frame so that IRET runs the instruction
# without the breakpoint firing again.  Then a data breakpoint (DR1, 4-byte write): a trap-like
# #DB with RIP after the store and DR6.B1; a read of the word does not fire it.
DB_LOG_RF = DB_LOG.replace("        incl    nlog\n", "        incl    nlog\n        orl     $(1 << 16), 32(%rsp)\n")
BREAKPOINTS = DB_LOG_RF + """
        movq    $base, %rax
        movq    %rax, %dr0
        movq    $0x402, %rax                # L0, execute
        movq    %rax, %dr7
base:   nop
        nop
        movq    $0, %rax
        movq    %rax, %dr7
        movq    $watched, %rax
        movq    %rax, %dr1
        movq    $0x00d00408, %rax           # L1, write, 4 bytes
        movq    %rax, %dr7
        movl    watched, %eax               # a read: no #DB
        movl    $42, watched                # 10 bytes
after:  nop
        movq    $0x400, %rax
        movq    %rax, %dr7
""" + REPORT_LOG + """
        movl    $(after - base), %eax
        outl    %eax, $0xe0
        jmp     9f
        .balign 4
watched: .long 0
9:
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_instruction_and_data_breakpoints(backend: str) -> None:
    *log, after = reported(BREAKPOINTS, backend)
    if backend == "kvm" and vendor_module() == "kvm_pvm":
        # kvm_pvm artefact: the store runs in KVM's emulator, which checks code breakpoints
        # (kvm_vcpu_check_code_breakpoint) but no data breakpoints: no second #DB.
        assert log == [1, 0, DR6_ACTIVE_LOW | 1]
        return
    assert log == [2, 0, DR6_ACTIVE_LOW | 1, after, DR6_ACTIVE_LOW | 2]


# A data breakpoint hit by MOV SS: the #DB waits until the instruction after it has completed
# (SDM 6.8.3), so RIP is past that one; an ordinary load's #DB comes right after the load.
MOVSS_WATCH = DB_LOG + """
        movq    $watched, %rax
        movq    %rax, %dr1
        movq    $0x00f00408, %rax           # L1, read or write, 4 bytes
        movq    %rax, %dr7
base:   movl    watched, %ecx               # #DB after it
l1:     mov     watched, %ss                # held back ...
        nop                                 # ... until this is done
l2:     movq    $0x400, %rax
        movq    %rax, %dr7
""" + REPORT_LOG + """
        movl    $(l1 - base), %eax
        outl    %eax, $0xe0
        movl    $(l2 - base), %eax
        outl    %eax, $0xe0
        jmp     9f
        .balign 4
watched: .long 0x10
9:
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_mov_ss_holds_a_data_breakpoint_for_one_instruction(backend: str) -> None:
    b1 = DR6_ACTIVE_LOW | 2
    if backend == "kvm" and vendor_module() == "kvm_pvm":
        # kvm_pvm artefact (as above): KVM's emulator checks no data breakpoints.
        assert reported(MOVSS_WATCH, backend)[0] == 0
        return
    *log, l1, l2 = reported(MOVSS_WATCH, backend)
    assert log == [2, l1, b1, l2, b1]


# An instruction breakpoint on the instruction right after MOV SS is suppressed on Intel (MOV-SS
# blocking inhibits code #DBs: kvm-unit-tests emulator "#DB suppressed after MOV SS"); the same
# breakpoint reached by a NOP fires.
def _bp_after(first: str) -> str:
    return DB_LOG_RF + f"""
        movq    $base, %rax
        movq    %rax, %dr0
        movq    $0x402, %rax
        movq    %rax, %dr7
        movl    %ss, %ecx
        {first}
base:   xorl    %ecx, %ecx
        movq    $0x400, %rax
        movq    %rax, %dr7
""" + REPORT_LOG


@pytest.mark.parametrize("backend", BACKENDS)
def test_mov_ss_blocking_suppresses_an_instruction_breakpoint(backend: str) -> None:
    if backend == "kvm" and vendor_module() == "kvm_pvm":
        # kvm_pvm artefact: its emulator runs the MOV SS and keeps no MOV-SS shadow for
        # kvm_vcpu_check_code_breakpoint to see, so the breakpoint fires.
        assert reported(_bp_after("movl %ecx, %ss"), backend) == [1, 0, DR6_ACTIVE_LOW | 1]
    else:
        assert reported(_bp_after("movl %ecx, %ss"), backend) == [0]
    assert reported(_bp_after("nop"), backend) == [1, 0, DR6_ACTIVE_LOW | 1]
