"""The exit handlers issue 14 added, end to end where the silicon makes the exit (INVLPG, INVPCID,
MONITOR/MWAIT, PAUSE-loop, bus lock) and by synthesized exits where it cannot (NOTIFY: no
instruction; APIC_WRITE/EOI_INDUCED: APICv is off, as on this host)."""

from __future__ import annotations

import pytest

from kvmsim.hw.vmcs import (CPU_BASED_INVLPG_EXITING, SECONDARY_EXEC_BUS_LOCK_DETECTION,
                            SECONDARY_EXEC_PAUSE_LOOP_EXITING, ExitReason, Vector)
from kvmsim.kvm import lapic, vmx
from kvmsim.uapi import KvmExit, KvmRunFlags
from tests.simvm import kvm_run, machine

DEVS = [{"type": "debug-exit", "port": 0xf4}]


def _exits(m, reason: str) -> int:
    return m.vcpu.vcpu.stat.exits_by_reason.get(reason, 0)


def _injected(m) -> list[int]:
    return [e["vector"] for e in m.vcpu.vcpu.stat.injected_exceptions]


# ---------------------------------------------------------------- INVLPG / INVPCID (no EPT)

def test_invlpg_exits_only_without_ept_with_the_address_as_qualification() -> None:
    asm = "mov $0x123456, %rax\ninvlpg (%rax)\nout %al, $0x80\nhlt"
    m = machine(asm, kvm={"enable_ept": False})
    try:
        assert m.vcpu.vcpu.hw.vmcs.cpu_based_vm_exec_control & CPU_BASED_INVLPG_EXITING
        kvm_run(m, KvmExit.IO)
        assert _exits(m, "INVLPG") == 1 and m.vcpu.vcpu.stat.invlpg == 1
    finally:
        m.close()
    m = machine(asm)                                         # EPT: INVLPG runs natively
    try:
        kvm_run(m, KvmExit.IO)
        assert _exits(m, "INVLPG") == 0
    finally:
        m.close()


def test_invlpg_handler_reads_the_qualification() -> None:
    m = machine("hlt")
    try:
        vcpu = m.vcpu.vcpu
        v = vcpu.hw.vmcs
        v.vm_exit_reason, v.exit_qualification, v.vm_exit_instruction_len = int(ExitReason.INVLPG), 0x5000, 3
        rip = vcpu.hw.reg("rip")
        assert vmx.vmx_handle_exit(vcpu, 0) == 1 and vcpu.hw.reg("rip") == rip + 3 and vcpu.stat.invlpg == 1
        v.exit_qualification = 0x8000_0000_0000_0000           # non-canonical: nothing to flush
        assert vmx.vmx_handle_exit(vcpu, 0) == 1 and vcpu.stat.invlpg == 1
    finally:
        m.close()


_DESC = "desc: .quad {pcid}, {addr}\n"


@pytest.mark.parametrize("kind,pcid,addr,fault", [
    (0, 0, 0x1000, None),                  # one address
    (0, 0, 0x8000_0000_0000_0000, 13),     # non-canonical
    (1, 5, 0, 13),                         # a PCID without CR4.PCIDE
    (2, 0, 0, None),                       # everything
    (3, 0, 0, None),                       # all but globals
    (4, 0, 0, 13),                         # no such type
    (0, 0x1000, 0, 13),                    # PCID above 4095
])
def test_invpcid_without_ept_exits_and_kvm_checks_the_descriptor(kind, pcid, addr, fault) -> None:
    asm = (f"mov ${kind}, %rax\nlea desc(%rip), %rbx\ninvpcid (%rbx), %rax\n"
           "out %al, $0x80\nhlt\n" + _DESC.format(pcid=pcid, addr=addr))
    m = machine(asm, kvm={"enable_ept": False})
    try:
        run = kvm_run(m)                     # a fault: no guest IDT here, so it ends in a triple fault
        assert KvmExit(run.exit_reason) == (KvmExit.SHUTDOWN if fault else KvmExit.IO)
        assert _exits(m, "INVPCID") == 1
        assert _injected(m)[:1] == ([fault] if fault else [])
    finally:
        m.close()


def test_invpcid_with_ept_is_the_cpus_own() -> None:
    m = machine("mov $2, %rax\nlea desc(%rip), %rbx\ninvpcid (%rbx), %rax\nout %al, $0x80\nhlt\n"
                + _DESC.format(pcid=0, addr=0))
    try:
        kvm_run(m, KvmExit.IO)
        assert _exits(m, "INVPCID") == 0 and _injected(m) == []
    finally:
        m.close()


def test_invpcid_without_guest_cpuid_is_ud_before_any_exit() -> None:
    m = machine("mov $2, %rax\nlea desc(%rip), %rbx\ninvpcid (%rbx), %rax\nout %al, $0x80\nhlt\n"
                + _DESC.format(pcid=0, addr=0), kvm={"cpuid": [{"function": 7, "index": 0, "ebx": 0}]})
    try:
        r = m.vcpu.run()
        assert r == 0 and _exits(m, "INVPCID") == 0
        assert m.vcpu.vcpu.stat.exits_by_reason.get("EXCEPTION_NMI") == 1      # #UD is intercepted
    finally:
        m.close()


# ---------------------------------------------------------------- MONITOR / MWAIT

def test_monitor_mwait_are_nops_under_the_quirk() -> None:
    m = machine("mov $0x1000, %rax\nxor %ecx, %ecx\nxor %edx, %edx\nmonitor\nmwait\nout %al, $0x80\nhlt")
    try:
        kvm_run(m, KvmExit.IO)
        assert _exits(m, "MONITOR_INSTRUCTION") == 1 and _exits(m, "MWAIT_INSTRUCTION") == 1
        assert _injected(m) == []
    finally:
        m.close()


@pytest.mark.parametrize("monitor_cpuid", [False, True])
def test_monitor_mwait_without_the_quirk_follow_cpuid(monitor_cpuid: bool) -> None:
    """Without KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS: #UD unless CPUID.1:ECX.MONITOR (the guest has no
    IDT here, so the injected #UD ends in a triple fault)."""
    cpuid = [{"function": 1, "index": 0, "ecx": 1 << 3}] if monitor_cpuid else []
    m = machine("mov $0x1000, %rax\nxor %ecx, %ecx\nxor %edx, %edx\nmonitor\nmwait\nout %al, $0x80\nhlt",
                kvm={"quirk_mwait_never_ud_faults": False, "cpuid": cpuid})
    try:
        run = kvm_run(m)
        assert _exits(m, "MONITOR_INSTRUCTION") == 1
        if monitor_cpuid:
            assert KvmExit(run.exit_reason) == KvmExit.IO and _injected(m) == []
            assert _exits(m, "MWAIT_INSTRUCTION") == 1
        else:
            assert KvmExit(run.exit_reason) == KvmExit.SHUTDOWN and _injected(m)[0] == Vector.UD
            assert _exits(m, "MWAIT_INSTRUCTION") == 0
    finally:
        m.close()


# ---------------------------------------------------------------- PAUSE-loop exiting

def test_ple_window_grows_per_exit_and_shrinks_when_the_vcpu_is_loaded_again() -> None:
    m = machine("mov $200, %ecx\n1: pause\ndec %ecx\njnz 1b\nout %al, $0x80\nhlt")
    try:
        vcpu = m.vcpu.vcpu
        kvm_run(m, KvmExit.IO)
        assert _exits(m, "PAUSE_INSTRUCTION") == 2
        assert vcpu.arch.ple_window == 16384 and vcpu.hw.vmcs.ple_window == 16384
        vmx.vmx_vcpu_load(vcpu)                                # scheduled in again: back to ple_window
        assert vcpu.arch.ple_window == 4096 and vcpu.arch.ple_window_dirty
    finally:
        m.close()


def test_ple_gap_zero_turns_pause_loop_exiting_off() -> None:
    m = machine("mov $200, %ecx\n1: pause\ndec %ecx\njnz 1b\nout %al, $0x80\nhlt", kvm={"ple_gap": 0})
    try:
        assert not m.vcpu.vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_PAUSE_LOOP_EXITING
        kvm_run(m, KvmExit.IO)
        assert _exits(m, "PAUSE_INSTRUCTION") == 0
    finally:
        m.close()


@pytest.mark.parametrize("old,grow,maximum,want", [
    (4096, 2, 0xFFFF_FFFF, 8192),          # modifier below the base: multiply
    (4096, 5000, 0xFFFF_FFFF, 9096),       # not below: add
    (4096, 0, 0xFFFF_FFFF, 4096),          # 0: back to the base
    (4096, 2, 6000, 6000),                 # capped at ple_window_max
])
def test_grow_ple_window_arithmetic(old, grow, maximum, want) -> None:
    m = machine("hlt", kvm={"ple_window_grow": grow, "ple_window_max": maximum})
    try:
        vcpu = m.vcpu.vcpu
        vcpu.arch.ple_window = old
        vmx.grow_ple_window(vcpu)
        assert vcpu.arch.ple_window == want
    finally:
        m.close()


def test_shrink_ple_window_divides_and_floors_at_the_base() -> None:
    m = machine("hlt", kvm={"ple_window_shrink": 4})
    try:
        vcpu = m.vcpu.vcpu
        vcpu.arch.ple_window = 65536
        vmx.shrink_ple_window(vcpu)
        assert vcpu.arch.ple_window == 16384
        vmx.shrink_ple_window(vcpu)
        vmx.shrink_ple_window(vcpu)
        assert vcpu.arch.ple_window == 4096                    # never below ple_window
    finally:
        m.close()


# ---------------------------------------------------------------- bus lock

def test_split_lock_exits_to_userspace_as_bus_lock() -> None:
    asm = "mov $0x20003e, %rbx\nlock incl (%rbx)\nlock incl 4(%rbx)\nout %al, $0x80\nhlt"
    m = machine(asm, memory=[{"gpa": 0, "size": "4M"}], kvm={"bus_lock_exit": True})
    try:
        vcpu = m.vcpu.vcpu
        assert vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_BUS_LOCK_DETECTION
        run = kvm_run(m, KvmExit.X86_BUS_LOCK)
        assert run.flags & KvmRunFlags.KVM_RUN_X86_BUS_LOCK
        assert m.vcpu.get_regs().rip == m.image.load_addr + 7 + 3   # trap-like: after the LOCK INC
        assert int.from_bytes(bytes(m.ram[0][1][0x20003e:0x200042]), "little") == 1
        kvm_run(m, KvmExit.IO)                                 # 4(%rbx) = 0x200042: one line, no exit
        assert _exits(m, "BUS_LOCK") == 1
    finally:
        m.close()


def test_split_lock_without_the_capability_is_no_exit() -> None:
    m = machine("mov $0x20003e, %rbx\nlock incl (%rbx)\nout %al, $0x80\nhlt", memory=[{"gpa": 0, "size": "4M"}])
    try:
        kvm_run(m, KvmExit.IO)
        assert _exits(m, "BUS_LOCK") == 0
    finally:
        m.close()


# ---------------------------------------------------------------- synthesized: NOTIFY, APIC_WRITE, EOI_INDUCED

def _synth(vcpu, reason: ExitReason, qual: int) -> int:
    v = vcpu.hw.vmcs
    v.vm_exit_reason, v.exit_qualification, v.vm_exit_instruction_len = int(reason), qual, 0
    return vmx.vmx_handle_exit(vcpu, 0)


@pytest.mark.parametrize("flags,qual,to_user,run_flags", [
    (1, 0, False, None),                   # KVM_X86_NOTIFY_VMEXIT_ENABLED only: KVM resumes the guest
    (3, 0, True, 0),                       # ... | USER: KVM_EXIT_NOTIFY
    (1, 1, True, 1),                       # VM context invalid: always to userspace
])
def test_handle_notify(flags, qual, to_user, run_flags) -> None:
    m = machine("hlt")
    try:
        vcpu = m.vcpu.vcpu
        vcpu.kvm.params.notify_vmexit_flags = flags
        assert _synth(vcpu, ExitReason.NOTIFY, qual) == (0 if to_user else 1)
        assert vcpu.stat.notify_window_exits == 1
        if to_user:
            assert vcpu.run.exit_reason == KvmExit.NOTIFY and vcpu.run.notify.flags == run_flags
    finally:
        m.close()


def test_handle_apic_write_applies_an_eoi_from_the_virtual_apic_page() -> None:
    m = machine("hlt", kvm={"irqchip": True})
    try:
        vcpu = m.vcpu.vcpu
        apic = vcpu.arch.apic
        lapic._set_vector(apic, lapic.APIC_ISR, 0x31, True)
        assert lapic.apic_find_highest_isr(apic) == 0x31
        assert _synth(vcpu, ExitReason.APIC_WRITE, lapic.APIC_EOI) == 1
        assert lapic.apic_find_highest_isr(apic) == -1
    finally:
        m.close()


def test_handle_apic_eoi_induced_requests_event_evaluation() -> None:
    m = machine("hlt", kvm={"irqchip": True})
    try:
        vcpu = m.vcpu.vcpu
        vcpu.requests.discard("KVM_REQ_EVENT")
        assert _synth(vcpu, ExitReason.EOI_INDUCED, 0x31) == 1 and "KVM_REQ_EVENT" in vcpu.requests
    finally:
        m.close()


def test_handle_pml_full_resumes_and_sets_nmi_blocking_after_an_iret() -> None:
    m = machine("hlt")
    try:
        vcpu = m.vcpu.vcpu
        assert _synth(vcpu, ExitReason.PML_FULL, 0x1000) == 1       # INTR_INFO_UNBLOCK_NMI
        assert vmx.vmx_get_nmi_mask(vcpu)
    finally:
        m.close()
