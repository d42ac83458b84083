"""Dirty logging end to end on the sim: PML logs each page once per KVM_GET_DIRTY_LOG round, a full
512-entry buffer makes a PML_FULL exit and loses nothing, and KVM_GET_DIRTY_LOG clears what it
reports so the next write logs the page again; with manual protect (KVM_CLEAR_DIRTY_LOG) on both
backends."""

from __future__ import annotations

import pytest

from kvmsim.hw.vmcs import SECONDARY_EXEC_ENABLE_PML
from kvmsim.scenario.runner import make_machine
from kvmsim.uapi import KVM_MEM_LOG_DIRTY_PAGES, KvmExit
from tests.backends import BACKENDS
from tests.simvm import kvm_run, machine, scenario

BASE = 0x400000
NPAGES = 600


def _pages(bitmap: bytes) -> list[int]:
    return [i for i in range(len(bitmap) * 8) if bitmap[i >> 3] >> (i & 7) & 1]


def _machine(asm: str):
    return machine(asm, memory=[{"gpa": 0, "size": "2M"}, {"gpa": BASE, "size": "4M", "log_dirty": True}],
                   devices=[{"type": "debug-exit", "port": 0xf4}])


def test_600_pages_fill_the_pml_buffer_once_and_all_reach_the_bitmap() -> None:
    asm = f"""
        mov ${BASE}, %rdi
        mov ${NPAGES}, %ecx
    1:  movb $1, (%rdi)
        movb $2, 8(%rdi)          # same page: logged once
        add $0x1000, %rdi
        loop 1b
        out %al, $0x80
        mov ${BASE + 0x3000}, %rdi
        movb $3, (%rdi)           # after KVM_GET_DIRTY_LOG: logged again
        movb $4, 0x1000(%rdi)     # reported too, so it logs again as well
        out %al, $0x80
        hlt
    """
    m = _machine(asm)
    try:
        vcpu = m.vcpu.vcpu
        assert vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_ENABLE_PML
        kvm_run(m, KvmExit.IO)
        assert vcpu.stat.exits_by_reason["PML_FULL"] == 1          # the 513th page
        assert _pages(m.vm.get_dirty_log(1)) == list(range(NPAGES))
        assert _pages(m.vm.get_dirty_log(1)) == []                 # cleared by the first read
        kvm_run(m, KvmExit.IO)
        assert _pages(m.vm.get_dirty_log(1)) == [3, 4]             # re-protected pages log again
    finally:
        m.close()


def test_memslot_without_logging_has_no_pml_and_no_dirty_log() -> None:
    m = machine("hlt", memory=[{"gpa": 0, "size": "2M"}])
    try:
        assert not m.vcpu.vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_ENABLE_PML
        try:
            m.vm.get_dirty_log(0)
        except Exception as e:
            assert getattr(e, "errno", None) == 2                   # ENOENT
        else:
            raise AssertionError("KVM_GET_DIRTY_LOG on a slot without logging succeeded")
    finally:
        m.close()


def test_logging_turned_off_by_a_flags_change_drops_pml() -> None:
    m = _machine("hlt")
    try:
        gpa, size, mem = m.vm.kvm.memslots[1]
        m.vm.set_user_memory_region(1, gpa, mem, 0)
        assert not m.vcpu.vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_ENABLE_PML
        m.vm.set_user_memory_region(1, gpa, mem, KVM_MEM_LOG_DIRTY_PAGES)
        assert m.vcpu.vcpu.hw.vmcs.secondary_vm_exec_control & SECONDARY_EXEC_ENABLE_PML
    finally:
        m.close()


# ---------------------------------------------------------------- both backends: manual protect


_ROUNDS = """
    mov $0x200000, %rdi
    movb $1, (%rdi)
    movb $1, 0x1000(%rdi)
    out %al, $0x80
    movb $2, (%rdi)
    movb $2, 0x2000(%rdi)
    out %al, $0x80
    hlt
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_manual_protect_get_keeps_the_bits_and_clear_reprotects(backend: str) -> None:
    """KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: GET_DIRTY_LOG no longer clears; KVM_CLEAR_DIRTY_LOG of page
    0 clears its bit and write-protects it, so the guest's next write to it is reported again."""
    sc = scenario(_ROUNDS, memory=[{"gpa": 0, "size": "2M"}, {"gpa": 0x200000, "size": "256K", "log_dirty": True}],
                  devices=[{"type": "debug-exit", "port": 0xf4}])
    m = make_machine(sc, backend)
    try:
        m.vm.enable_manual_dirty_log_protect(1)
        kvm_run(m, KvmExit.IO)
        assert _pages(m.vm.get_dirty_log(1)) == [0, 1]
        assert _pages(m.vm.get_dirty_log(1)) == [0, 1]                  # not cleared by GET
        m.vm.clear_dirty_log(1, 0, 64, bytes([1]) + bytes(7))            # page 0 only
        assert _pages(m.vm.get_dirty_log(1)) == [1]
        kvm_run(m, KvmExit.IO)
        assert _pages(m.vm.get_dirty_log(1)) == [0, 1, 2]
        with pytest.raises(Exception) as e:
            m.vm.clear_dirty_log(1, 3, 64, bytes(8))                     # first_page not a multiple of 64
        assert getattr(e.value, "errno", None) == 22
    finally:
        m.close()
