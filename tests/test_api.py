"""kvmsim.api (the documented Python API): the README's VMM loop and typed exits, on the sim and on /dev/kvm.

Each test runs the same VMM code on both backends; the kvm half carries the `kvm` marker and skips
with the probe's reason where /dev/kvm is not usable.
"""

from __future__ import annotations

import mmap
import re
import subprocess
from dataclasses import fields
import sys
from pathlib import Path

import pytest

import kvmsim
from kvmsim import Hlt, Io, IoDirection, Kvm, Mmio
from kvmsim.errors import BackendError
from kvmsim.realkvm.probe import kvm_available
from backends import BACKENDS

README = Path(__file__).resolve().parents[1] / "README.md"



def readme_snippet() -> str:
    """The first ```python block of the README's "## Python API" section."""
    text = README.read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README: no python block in the Python API section"
    return m.group(1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_readme_vmm_loop_runs_as_written(backend: str, tmp_path: Path) -> None:
    script = tmp_path / "vmm.py"
    script.write_text(readme_snippet())
    r = subprocess.run([sys.executable, str(script), backend], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "4\n"   # 2 + 2, written by the guest through KVM_EXIT_IO


# Real mode at 0x1000: IN from 0x60, an MMIO read and an MMIO write at 0x20000, a write into a
# coalesced zone, OUT to an ioeventfd port (no exit), OUT to 0x3f8, CPUID leaf 0, HLT.
GUEST = bytes.fromhex(
    "e460"          # in al, 0x60
    "88c3"          # mov bl, al
    "b80020"        # mov ax, 0x2000
    "8ed8"          # mov ds, ax
    "8b0e0000"      # mov cx, [0]        -> MMIO read at 0x20000
    "890e0400"      # mov [4], cx        -> MMIO write at 0x20004
    "890e0010"      # mov [0x1000], cx   -> coalesced, no exit (0x21000)
    "e680"          # out 0x80, al       -> ioeventfd, no exit
    "baf803"       # mov dx, 0x3f8
    "88d8"          # mov al, bl
    "ee"            # out dx, al
    "6631c0"        # xor eax, eax
    "0fa2"          # cpuid
    "f4")           # hlt
VENDOR = b"kvmsimkvmsim"   # leaf 0 vendor string installed through set_cpuid


def _real_mode_at(vcpu, ip: int = 0x1000) -> None:
    """Point a reset vCPU's CS:IP at 0000:ip (the reset state has CS base 0xffff0000, IP 0xfff0)."""
    sregs = vcpu.get_sregs()
    sregs.cs.base = sregs.cs.selector = 0
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    regs.rip = ip
    vcpu.set_regs(regs)


def _vcpu_running(vm, code: bytes):
    """64 KiB of RAM at GPA 0 with `code` at 0x1000, and a vCPU about to run it in real mode."""
    ram = mmap.mmap(-1, 0x10000)
    ram[0x1000:0x1000 + len(code)] = code
    vm.set_user_memory_region(0, 0, ram)
    vcpu = vm.create_vcpu(0)
    _real_mode_at(vcpu)
    return vcpu


def _run_guest(backend: str) -> tuple[list[tuple], dict[str, int], list, int]:
    """Boot GUEST in real mode and answer its exits; returns (exits, regs, coalesced, eventfd count)."""
    exits: list[tuple] = []
    with Kvm(backend) as kvm, kvm.create_vm() as vm:
        ram = mmap.mmap(-1, 0x10000)
        ram[0x1000:0x1000 + len(GUEST)] = GUEST
        vm.set_user_memory_region(0, 0, ram)
        vcpu = vm.create_vcpu(0)
        vm.register_coalesced_mmio(0x21000, 0x1000)
        efd = vm.ioeventfd(0x80, 1, pio=True)
        cpuid = vcpu.get_cpuid()
        leaf0 = next(e for e in cpuid if e.function == 0)
        leaf0.ebx, leaf0.edx, leaf0.ecx = (int.from_bytes(VENDOR[i:i + 4], "little") for i in (0, 4, 8))
        vcpu.set_cpuid(cpuid)
        assert [(e.function, e.index, e.ebx) for e in vcpu.get_cpuid()] == \
            [(e.function, e.index, e.ebx) for e in cpuid]
        sregs = vcpu.get_sregs()
        assert (sregs.cs.selector, sregs.cs.base, vcpu.get_regs().rip) == (0xF000, 0xFFFF0000, 0xFFF0)
        _real_mode_at(vcpu)
        previous = None
        for _ in range(10):
            ex = vcpu.run()
            if previous is not None:   # the last exit's data view ended with this run()
                with pytest.raises(ValueError):
                    bytes(previous.data)
            match ex:
                case Io(direction=IoDirection.IN, data=data):
                    data[:] = b"\x5a"
                case Mmio(is_write=False, data=data):
                    data[:] = b"\x34\x12"
            if isinstance(ex, (Io, Mmio)):
                exits.append((type(ex).__name__, *(getattr(ex, f.name) for f in fields(ex) if f.name != "data"),
                              bytes(ex.data)))
                previous = ex
            else:
                exits.append((type(ex).__name__,))
                previous = None
            if isinstance(ex, Hlt):
                break
        assert vcpu.kvm_run.exit_reason == 5   # raw struct kvm_run: KVM_EXIT_HLT
        coalesced = []
        while (entry := vcpu.coalesced_mmio_read()) is not None:
            coalesced.append(entry)
        r = vcpu.get_regs()
        return exits, {"vendor": (r.rbx.to_bytes(4, "little") + r.rdx.to_bytes(4, "little")
                                  + r.rcx.to_bytes(4, "little"))}, coalesced, efd.read_count()


@pytest.mark.parametrize("backend", BACKENDS)
def test_typed_exits_and_vcpu_state(backend: str) -> None:
    exits, regs, coalesced, kicks = _run_guest(backend)
    assert exits == [
        ("Io", 0x60, 1, IoDirection.IN, 1, b"\x5a"),
        ("Mmio", 0x20000, 2, False, b"\x34\x12"),
        ("Mmio", 0x20004, 2, True, b"\x34\x12"),
        ("Io", 0x3F8, 1, IoDirection.OUT, 1, b"\x5a"),
        ("Hlt",),
    ]
    assert regs["vendor"] == VENDOR   # CPUID leaf 0 answered from the table set_cpuid installed
    assert coalesced == [(0x21000, False, b"\x34\x12")]
    assert kicks == 1


@pytest.mark.kvm
def test_backends_agree_on_the_same_vmm_code() -> None:
    assert _run_guest("sim") == _run_guest("kvm")


def test_vm_context_manager_releases_the_engine() -> None:
    with Kvm("sim") as kvm, kvm.create_vm() as vm:
        vcpu = _vcpu_running(vm, b"\xf4")   # hlt
        assert isinstance(vcpu.run(), Hlt)
        hw = vcpu.fd.vcpu.hw
        assert hw.uc is not None
    assert hw.uc is None and vm.vcpus == []


def test_bad_backend_and_params_are_backend_errors() -> None:
    from kvmsim.kvm.vcpu import KvmParams

    with pytest.raises(BackendError, match="unknown backend 'qemu'"):
        Kvm("qemu")
    if kvm_available()[0]:
        with pytest.raises(BackendError, match="params"):
            Kvm("kvm", params=KvmParams())
    assert Kvm("sim", params=KvmParams(mmio_caching=False)).api_version() == 12


def test_package_root_exports_the_api() -> None:
    assert kvmsim.Kvm is Kvm and kvmsim.Io is Io and set(kvmsim.__all__) <= set(dir(kvmsim))


@pytest.mark.parametrize("backend", BACKENDS)
def test_kick_stops_a_spinning_guest_with_intr(backend: str) -> None:
    """The README's recipe for a guest that never exits: kick from a timer, run() returns Intr."""
    import threading

    from kvmsim import Intr

    with Kvm(backend) as kvm, kvm.create_vm() as vm:
        vcpu = _vcpu_running(vm, b"\xeb\xfe")   # jmp $
        timer = threading.Timer(0.2, vcpu.fd.kick)
        timer.start()
        try:
            assert isinstance(vcpu.run(), Intr)
        finally:
            timer.cancel()
        assert vcpu.kvm_run.exit_reason == 10 and vcpu.get_regs().rip == 0x1000   # KVM_EXIT_INTR, still spinning


@pytest.mark.kvm
def test_closing_the_vm_unmaps_kvm_run_even_with_an_exit_in_hand() -> None:
    """An exit's data view must not keep the real vCPU's kvm_run mapping alive after the VM is closed."""
    with Kvm("kvm") as kvm, kvm.create_vm() as vm:
        vcpu = _vcpu_running(vm, b"\xe4\x60")   # in al, 0x60
        ex = vcpu.run()
        assert isinstance(ex, Io) and len(ex.data) == 1
        kvm_run_mmap = vcpu.fd._mmap
    assert kvm_run_mmap.closed


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_irqchip_before_the_first_vcpu_only(backend: str) -> None:
    """Vm.create_irqchip: a vCPU made after it has the in-kernel APIC enabled at its reset base;
    the kernel's errors otherwise (EEXIST a second time, EINVAL once a vCPU exists)."""
    with Kvm(backend) as kvm, kvm.create_vm() as vm:
        vm.create_irqchip()
        with pytest.raises(BackendError) as again:
            vm.create_irqchip()
        assert again.value.errno == 17
        assert vm.create_vcpu(0).get_sregs().apic_base == 0xFEE00900
    with Kvm(backend) as kvm, kvm.create_vm() as vm:
        vm.create_vcpu(0)
        with pytest.raises(BackendError) as late:
            vm.create_irqchip()
        assert late.value.errno == 22


@pytest.mark.parametrize("backend", BACKENDS)
def test_guest_debug_singlestep_and_vcpu_events_through_the_api(backend: str) -> None:
    """Issue 14: set_guest_debug(ENABLE | SINGLESTEP) gives a Debug exit per instruction; the vCPU
    events of a KVM_NMI come back from get_vcpu_events and set_vcpu_events restores them."""
    from kvmsim import Debug
    from kvmsim.uapi import KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP
    code = bytes([0xB8, 0x01, 0x00,        # mov ax, 1
                  0x40,                    # inc ax
                  0x40,                    # inc ax
                  0xE6, 0x10])             # out 0x10, al
    with Kvm(backend) as kvm, kvm.create_vm() as vm:
        vcpu = _vcpu_running(vm, code)
        vcpu.set_guest_debug(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP)
        pcs = []
        for _ in range(3):
            ex = vcpu.run()
            assert isinstance(ex, Debug) and ex.exception == 1 and ex.dr6 & 0x4000
            pcs.append(ex.pc)
        assert pcs == [0x1003, 0x1004, 0x1005]
        vcpu.set_guest_debug(0)
        ex = vcpu.run()
        assert isinstance(ex, Io) and ex.port == 0x10 and bytes(ex.data) == b"\x03"
        vcpu.nmi()
        saved = vcpu.get_vcpu_events()
        assert saved.nmi.pending == 1
        none = kvmsim.KvmVcpuEvents.from_buffer_copy(saved)
        none.nmi.pending = 0
        vcpu.set_vcpu_events(none)
        assert vcpu.get_vcpu_events().nmi.pending == 0
        vcpu.set_vcpu_events(saved)
        assert vcpu.get_vcpu_events().nmi.pending == 1
