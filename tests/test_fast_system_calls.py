"""SYSCALL, SYSRET and SYSENTER as the Intel silicon runs them (hw/fastsys.py), and KVM's
emulation of SYSCALL outside 64-bit mode for an AMD-vendor guest (em_syscall after the #UD).

unicorn cannot be the reference here (its SYSCALL and SYSENTER only call hooks), so each test
asserts the architectural result the SDM defines: the registers and descriptor caches loaded,
RCX/R11, the masked RFLAGS, and the #UD/#GP Intel raises where QEMU would run the instruction.
"""

from __future__ import annotations

from kvmsim.scenario.runner import run_scenario
from kvmsim.uapi import KvmExit
from tests.simvm import kvm_run, machine, scenario, sym

UD, GP, DB = 6, 13, 1
AMD_VENDOR = [{"function": 0, "index": 0, "ebx": 0x68747541, "edx": 0x69746E65, "ecx": 0x444D4163}]

WRMSR = """
        movl    $\\msr, %ecx
        movl    $\\lo, %eax
        movl    $\\hi, %edx
        wrmsr
"""
LIB = """
        .include "kvmsim.inc"
        .macro SET_MSR msr, lo, hi
""" + WRMSR + """
        .endm
        .macro SET_SCE
        movl    $0xc0000080, %ecx
        rdmsr
        orl     $1, %eax
        wrmsr
        .endm
"""

SYSCALL64 = LIB + """
        GUEST_ENTRY
        SET_SCE
        SET_MSR 0xc0000081, 0, 0x00100018       # STAR: kernel CS 0x18, SS 0x20
        SET_MSR 0xc0000082, target, 0           # LSTAR
        SET_MSR 0xc0000084, 0x400, 0            # FMASK: DF
        std
        stc
        syscall
after:  hlt
target: hlt
"""


def assert_one_report_passes(sc) -> None:
    """A self-checking guest with one REPORT: its serial summary shows no failure."""
    res = run_scenario(sc)
    assert "SUMMARY: 1 tests, 0 failures" in res.serial, res.serial


def test_syscall_in_64bit_mode_loads_lstar_star_and_masks_rflags() -> None:
    m = machine(SYSCALL64)
    try:
        kvm_run(m, KvmExit.HLT)
        r, s = m.vcpu.get_regs(), m.vcpu.get_sregs()
        assert r.rip == sym(m, "target") + 1                    # LSTAR (then HLT)
        assert r.rcx == sym(m, "after")                         # return address
        assert r.r11 & 0x401 == 0x401                           # RFLAGS before: DF, CF
        assert r.rflags & 0x401 == 0x001                        # FMASK cleared DF only
        assert (s.cs.selector, s.cs.l, s.cs.db, s.cs.dpl, s.cs.type) == (0x18, 1, 0, 0, 0xB)
        assert (s.ss.selector, s.ss.db, s.ss.dpl, s.ss.type, s.ss.limit) == (0x20, 1, 0, 0x3, 0xFFFF_FFFF)
    finally:
        m.close()


def test_syscall_without_efer_sce_is_ud() -> None:
    assert_one_report_passes(scenario("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        EXPECT_FAULT UD_VECTOR, syscall
        REPORT  e, "SYSCALL with EFER.SCE=0 is #UD"
        REPORT_SUMMARY
"""))


def test_syscall_with_tf_left_by_fmask_traps_after_it() -> None:
    """TF set and not in FMASK: the single-step #DB comes after SYSCALL, at the LSTAR target."""
    m = machine(LIB + """
        GUEST_ENTRY
        SET_IDT_HANDLER DB_VECTOR, db_handler
        SET_SCE
        SET_MSR 0xc0000081, 0, 0x00100018
        SET_MSR 0xc0000082, target, 0
        SET_MSR 0xc0000084, 0, 0
        pushfq
        orq     $0x100, (%rsp)
        popfq
        syscall
        hlt
target: nop
        hlt
db_handler:
        movq    (%rsp), %rbx                    # the RIP the trap pushed
        hlt
""")
    try:
        kvm_run(m, KvmExit.HLT)
        assert m.vcpu.get_regs().rbx == sym(m, "target")
    finally:
        m.close()


SYSCALL32 = LIB + """
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        SET_SCE
        SET_MSR 0xc0000081, target, 0x00000008  # STAR: CS 0x08, legacy-mode EIP = target
        sti
        TRY     syscall
after:  movzbl  kvmsim_fault_vector, %ebx
        hlt
target: hlt
"""


def test_syscall_in_protected_mode_is_ud_for_an_intel_guest() -> None:
    """Intel silicon refuses it (#UD); KVM's em_syscall refuses it too for an Intel vendor."""
    m = machine(SYSCALL32, mode="prot32")
    try:
        kvm_run(m, KvmExit.HLT)
        assert m.vcpu.get_regs().rbx == UD
        assert m.vcpu.vcpu.stat.exits_by_reason["EXCEPTION_NMI"] == 1      # the #UD intercept
        assert m.vcpu.vcpu.stat.injected_exceptions == [{"vector": UD, "error_code": None}]
    finally:
        m.close()


def test_syscall_in_protected_mode_is_emulated_for_an_amd_guest() -> None:
    """AMD runs legacy-mode SYSCALL: KVM emulates it after the #UD (EIP = STAR[31:0], ECX = the
    return address, IF and VM cleared)."""
    m = machine(SYSCALL32, mode="prot32", kvm={"cpuid": AMD_VENDOR})
    try:
        kvm_run(m, KvmExit.HLT)
        r, s = m.vcpu.get_regs(), m.vcpu.get_sregs()
        assert r.rip == sym(m, "target") + 1
        assert r.rcx & 0xFFFF_FFFF == sym(m, "after")
        assert not r.rflags & 0x200
        assert s.cs.selector == 0x08 and s.ss.selector == 0x10
        assert m.vcpu.vcpu.stat.emulation_by_type and m.vcpu.vcpu.stat.injected_exceptions == []
    finally:
        m.close()


def test_sysret_outside_64bit_mode_is_ud() -> None:
    assert_one_report_passes(scenario(LIB + """
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        SET_SCE
        EXPECT_FAULT UD_VECTOR, sysret
        REPORT  e, "SYSRET in protected mode is #UD on Intel"
        REPORT_SUMMARY
""", mode="prot32"))


def test_sysretq_to_a_noncanonical_rcx_is_gp_in_ring0() -> None:
    assert_one_report_passes(scenario(LIB + """
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        SET_SCE
        movabsq $0x8000000000000000, %rcx
        EXPECT_FAULT GP_VECTOR, sysretq
        REPORT  e, "SYSRETQ to a non-canonical RCX is #GP(0) at CPL0"
        REPORT_SUMMARY
"""))


def test_sysenter_in_64bit_mode() -> None:
    m = machine(LIB + """
        GUEST_ENTRY
        SET_MSR 0x174, 0x18, 0                  # SYSENTER_CS
        SET_MSR 0x175, 0x70000, 0               # SYSENTER_ESP
        SET_MSR 0x176, target, 0                # SYSENTER_EIP
        sti
        sysenter
        hlt
target: hlt
""")
    try:
        kvm_run(m, KvmExit.HLT)
        r, s = m.vcpu.get_regs(), m.vcpu.get_sregs()
        assert (r.rip, r.rsp) == (sym(m, "target") + 1, 0x70000)
        assert not r.rflags & 0x200
        assert (s.cs.selector, s.cs.l, s.ss.selector) == (0x18, 1, 0x20)
    finally:
        m.close()


def test_sysenter_with_a_null_sysenter_cs_is_gp() -> None:
    assert_one_report_passes(scenario("""
        .include "kvmsim.inc"
        GUEST_ENTRY
        INSTALL_EXCEPTION_HANDLERS
        EXPECT_FAULT GP_VECTOR, sysenter
        REPORT  e, "SYSENTER with SYSENTER_CS = 0 is #GP(0)"
        REPORT_SUMMARY
""", mode="prot32"))
