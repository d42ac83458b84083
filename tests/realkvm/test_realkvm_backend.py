"""RealKvm / RealVm / RealVcpu plumbing: ioctl numbers, host info, errors, the KVM_RUN watchdog, tracefs parsing."""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import subprocess
import time

import pytest

from kvmsim.errors import BackendError
from kvmsim.realkvm import ioctls as K
from kvmsim.realkvm.backend import VENDOR_MODULES
from kvmsim.realkvm.tracefs import parse_line, parse_trace
from kvmsim.uapi import KVM_RUN_MMAP_SIZE, KvmExit

from kvmguest import Guest


@pytest.mark.skipif(not shutil.which("gcc") or not os.path.exists("/usr/include/linux/kvm.h"),
                    reason="needs gcc and <linux/kvm.h>")
def test_ioctl_numbers_match_host_header(tmp_path) -> None:
    names = [n for n in dir(K) if n.startswith("KVM_") and isinstance(getattr(K, n), int)
             and not n.startswith("KVM_MEM_")]
    body = "".join(f'printf("{n} %llu\\n", (unsigned long long)({n}));\n' for n in names)
    (tmp_path / "k.c").write_text(f"#include <stdio.h>\n#include <linux/kvm.h>\nint main(void){{\n{body}return 0;}}\n")
    subprocess.run(["gcc", "-o", tmp_path / "k", tmp_path / "k.c"], check=True, capture_output=True)
    out = subprocess.run([tmp_path / "k"], check=True, capture_output=True, text=True).stdout
    got = {n: int(v) for n, v in (line.split() for line in out.splitlines())}
    assert {n: getattr(K, n) for n in names} == got


def test_kvm_run_mmap_size_matches_uapi() -> None:
    assert K.KVM_RUN == 0xAE80 and K.KVM_NMI == 0xAE9A  # reference §10.1
    assert ctypes.sizeof(K.KvmUserspaceMemoryRegion) == 32 and ctypes.sizeof(K.KvmEnableCap) == 104


@pytest.mark.kvm
def test_host_info_names_vendor_module(host) -> None:
    assert host.module in VENDOR_MODULES
    assert host.api_version == 12
    assert host.vcpu_mmap_size == KVM_RUN_MMAP_SIZE  # kvm_run, pio page, coalesced ring
    assert host.caps["KVM_CAP_IMMEDIATE_EXIT"] and host.caps["KVM_CAP_X86_USER_SPACE_MSR"]


@pytest.mark.kvm
def test_failed_ioctl_raises_backend_error_naming_it(kvm) -> None:
    with kvm.create_vm() as vm:
        vm.create_vcpu(0)
        with pytest.raises(BackendError, match="KVM_CREATE_VCPU failed: EEXIST"):
            vm.create_vcpu(0)


@pytest.mark.kvm
def test_memslot_pins_vmm_memory_until_vm_closes(kvm) -> None:
    ram = mmap.mmap(-1, 0x10000)
    vm = kvm.create_vm()
    vm.set_user_memory_region(0, 0, memoryview(ram))
    with pytest.raises(BufferError):
        ram.close()
    vm.close()
    ram.close()


@pytest.mark.kvm
def test_close_releases_fds(kvm, binutils) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with Guest(kvm, "long64", "hlt") as g:
            g.vm.ioeventfd(0x80, 1, pio=True)
            g.run(2)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.kvm
def test_watchdog_kicks_spinning_guest_out_of_kvm_run(kvm, binutils) -> None:
    with Guest(kvm, "long64", "1: jmp 1b") as g:
        g.vcpu.run_timeout = 0.3
        t0 = time.monotonic()
        assert g.vcpu.run() == -4  # -EINTR
        assert time.monotonic() - t0 < 3
        assert g.vcpu.timed_out
        assert g.vcpu.mapping.run.exit_reason == KvmExit.INTR
        assert g.vcpu.mapping.run.immediate_exit == 0  # the watchdog cleans up after itself


@pytest.mark.kvm
def test_immediate_exit_returns_eintr_without_entering_guest(kvm, binutils) -> None:
    with Guest(kvm, "long64", "mov al, 1\n out 0xe1, al\n hlt") as g:
        g.vcpu.mapping.run.immediate_exit = 1
        assert g.vcpu.run() == -4
        assert g.vcpu.mapping.run.exit_reason == 0  # untouched: KVM_RUN bails out before vcpu_run
        assert g.regs()["rip"] == 0x1000
        g.vcpu.mapping.run.immediate_exit = 0
        assert g.vcpu.run() == 0 and g.vcpu.mapping.run.exit_reason == KvmExit.IO


TRACE = """\
# tracer: nop
          python-4242    [001] .....   100.000001: kvm_emulate_insn: 0:1002:e6 10 (prot64)
          python-4242    [001] .....   100.000002: kvm_pio: pio_write at 0x10 size 1 count 1 val 0x42 
          python-4242    [001] .....   100.000003: kvm_userspace_exit: reason KVM_EXIT_IO (2)
          python-4242    [001] .....   100.000004: kvm_mmio: mmio unsatisfied-read len 4 gpa 0xd0000000 val 0x0
          python-4242    [001] .....   100.000005: kvm_emulate_insn: 0:100a:c5 fe (prot64) failed
          python-4242    [001] d..1.   100.000006: kvm_exit: vcpu 0 reason IO_INSTRUCTION rip 0x1002 info1 0x0000000000100040 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000
          python-4242    [001] d..1.   100.000007: kvm_entry: vcpu 0, rip 0x1004 [immediate exit]
"""


def test_tracefs_parses_kvm_event_lines() -> None:
    evs = parse_trace(TRACE)
    assert [e["event"] for e in evs] == ["kvm_emulate_insn", "kvm_pio", "kvm_userspace_exit", "kvm_mmio",
                                         "kvm_emulate_insn", "kvm_exit", "kvm_entry"]
    assert evs[0]["fields"] == {"csbase": 0, "rip": 0x1002, "insn": b"\xe6\x10", "mode": "prot64", "failed": False}
    assert evs[1]["fields"] == {"rw": "write", "port": 0x10, "size": 1, "count": 1, "val": 0x42, "more": False}
    assert evs[2]["fields"] == {"reason": "KVM_EXIT_IO", "errno": 2}
    assert evs[3]["fields"] == {"type": "unsatisfied-read", "len": 4, "gpa": 0xD0000000, "val": 0}
    assert evs[4]["fields"]["failed"] and evs[4]["fields"]["insn"] == b"\xc5\xfe"
    assert evs[5]["fields"]["reason"] == "IO_INSTRUCTION" and evs[5]["fields"]["info1"] == 0x100040
    assert evs[6]["fields"] == {"vcpu_id": 0, "rip": 0x1004, "immediate_exit": True}
    assert evs[0]["pid"] == 4242 and evs[0]["comm"] == "python"
    assert parse_line("garbage") is None


@pytest.mark.kvm
def test_a_late_watchdog_fire_does_not_cut_the_next_run_short(kvm, binutils) -> None:
    """The watchdog polls: it can fire just after a KVM_RUN returned.  The next run() undoes that
    stale immediate_exit and runs the guest (no -EINTR, not timed out)."""
    with Guest(kvm, "long64", "mov al, 1\n out 0xe1, al\n mov al, 2\n out 0xe1, al\n hlt") as g:
        assert g.vcpu.run() == 0 and g.vcpu.mapping.run.io.port == 0xE1
        g.vcpu._stale_fire = g.vcpu._run_gen          # what a fire for the run just ended leaves
        g.vcpu.mapping.run.immediate_exit = 1
        assert g.vcpu.run() == 0 and not g.vcpu.timed_out
        assert g.vcpu.mapping.run.exit_reason == KvmExit.IO


@pytest.mark.kvm
def test_kick_stays_set_through_a_stale_fire(kvm, binutils) -> None:
    """kick() asks every later KVM_RUN to return at once; undoing a stale watchdog fire keeps that."""
    with Guest(kvm, "long64", "hlt") as g:
        g.vcpu.kick()
        g.vcpu._stale_fire = g.vcpu._run_gen
        assert g.vcpu.run() == -4
        assert g.vcpu.mapping.run.immediate_exit == 1
