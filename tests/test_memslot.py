"""KVM_SET_USER_MEMORY_REGION's errors (kvmsim/kvm/memslot.py): the sim's ioctl through kvmsim.api answers
EINVAL / EEXIST where the kernel's kvm_vm_ioctl_set_memory_region, __kvm_set_memory_region and
kvm_arch_prepare_memory_region do, `check` reports the same refusals at the memslot's line, and where
/dev/kvm exists every case is asked of the real kernel too and must get the same errno.
"""

from __future__ import annotations

import errno
import mmap
from pathlib import Path
from typing import Any

import pytest

from kvmsim.kvm import memslot
from kvmsim.api import Kvm
from kvmsim.cli import main
from kvmsim.errors import BackendError
from kvmsim.kvm.vcpu import KvmParams

PAGE = 4096
RO, LOG = 2, 1

# (slot, gpa, offset of userspace_addr into the buffer, size, flags): one ioctl.
Call = tuple[int, int, int, int, int]


def _tdp_max(bits: int) -> int:
    return 1 << bits


# name: (ioctls made first, each must succeed; the ioctl under test; its errno, 0 for success).
# The GFN-limit cases are relative to the host width (`W`: placeholder replaced by 1 << bits).
CASES: dict[str, tuple[list[Call], Call, int]] = {
    "ok": ([], (0, 0, 0, PAGE, 0), 0),
    "gpa-not-page-aligned": ([], (0, 0x800, 0, PAGE, 0), errno.EINVAL),
    "size-not-page-multiple": ([], (0, 0, 0, 0x800, 0), errno.EINVAL),
    "userspace-addr-not-aligned": ([], (0, 0, 1, PAGE, 0), errno.EINVAL),
    "flag-log-dirty-ok": ([], (0, 0, 0, PAGE, LOG), 0),
    "flag-readonly-ok": ([], (0, 0, 0, PAGE, RO), 0),
    "flag-guest-memfd": ([], (0, 0, 0, PAGE, 4), errno.EINVAL),
    "flag-unknown": ([], (0, 0, 0, PAGE, 8), errno.EINVAL),
    "flag-bit-31": ([], (0, 0, 0, PAGE, 1 << 31), errno.EINVAL),
    "last-user-slot": ([], (memslot.KVM_USER_MEM_SLOTS - 1, 0, 0, PAGE, 0), 0),
    "slot-id-internal": ([], (memslot.KVM_USER_MEM_SLOTS, 0, 0, PAGE, 0), errno.EINVAL),
    "slot-id-max": ([], (0x7FFF, 0, 0, PAGE, 0), errno.EINVAL),
    "address-space-1": ([], (0x10000, 0, 0, PAGE, 0), errno.EINVAL),
    "address-space-ffff": ([], (0xFFFF0000, 0, 0, PAGE, 0), errno.EINVAL),
    "gpa-wraps": ([], (0, 0xFFFF_FFFF_FFFF_F000, 0, PAGE, 0), errno.EINVAL),
    "gpa-2^63": ([], (0, 1 << 63, 0, PAGE, 0), errno.EINVAL),
    "last-page-below-limit": ([], (0, -PAGE, 0, PAGE, 0), 0),          # W - 4K
    "first-page-beyond-limit": ([], (0, 0, 0, PAGE, 0), errno.EINVAL),  # gpa W
    "straddles-limit": ([], (0, -PAGE, 0, 2 * PAGE, 0), errno.EINVAL),
    "delete-missing-slot": ([], (3, 0, 0, 0, 0), errno.EINVAL),
    "delete-slot": ([(3, 0, 0, PAGE, 0)], (3, 0, 0, 0, 0), 0),
    "overlap-other-slot": ([(0, 0, 0, 2 * PAGE, 0)], (1, PAGE, 2 * PAGE, PAGE, 0), errno.EEXIST),
    "adjacent-slot": ([(0, 0, 0, 2 * PAGE, 0)], (1, 2 * PAGE, 2 * PAGE, PAGE, 0), 0),
    "overlap-after-delete": ([(0, 0, 0, PAGE, 0), (0, 0, 0, 0, 0)], (1, 0, PAGE, PAGE, 0), 0),
    "move-slot": ([(0, 0, 0, PAGE, 0)], (0, 0x10000, 0, PAGE, 0), 0),
    "move-onto-other": ([(0, 0, 0, PAGE, 0), (1, 0x10000, PAGE, PAGE, 0)], (0, 0x10000, 0, PAGE, 0), errno.EEXIST),
    "resize-slot": ([(0, 0, 0, PAGE, 0)], (0, 0, 0, 2 * PAGE, 0), errno.EINVAL),
    "new-userspace-addr": ([(0, 0, 0, PAGE, 0)], (0, 0, PAGE, PAGE, 0), errno.EINVAL),
    "toggle-readonly": ([(0, 0, 0, PAGE, 0)], (0, 0, 0, PAGE, RO), errno.EINVAL),
    "toggle-log-dirty": ([(0, 0, 0, PAGE, 0)], (0, 0, 0, PAGE, LOG), 0),
    "same-again": ([(0, 0, 0, PAGE, 0)], (0, 0, 0, PAGE, 0), 0),
}
_RELATIVE = {"last-page-below-limit", "first-page-beyond-limit", "straddles-limit"}


def _gpa(case: str, gpa: int, limit: int) -> int:
    return limit + gpa if case in _RELATIVE else gpa


def _ioctl(vm: Any, buf: mmap.mmap, call: Call) -> int:
    """One KVM_SET_USER_MEMORY_REGION through kvmsim.api: 0 or the errno."""
    slot, gpa, off, size, flags = call
    view = memoryview(buf)[off:off + size]
    try:
        vm.set_user_memory_region(slot, gpa, view, flags=flags)
        return 0
    except BackendError as e:
        assert e.errno is not None, str(e)
        return e.errno
    finally:
        view.release()


def run_case(backend: str, case: str, limit: int, params: KvmParams | None = None) -> list[int]:
    """The errno of every ioctl of the case, in order, on a fresh VM."""
    before, call, _ = CASES[case]
    buf = mmap.mmap(-1, 16 * PAGE)
    kvm = Kvm(backend, params=params) if backend == "sim" else Kvm(backend)
    try:
        with kvm, kvm.create_vm() as vm:
            out = []
            for c in before + [call]:
                s, g, o, n, f = c
                out.append(_ioctl(vm, buf, (s, _gpa(case, g, limit) if c is call else g, o, n, f)))
            return out
    finally:
        buf.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_sim_answers_as_the_kernel(case: str) -> None:
    limit = 1 << memslot.kvm_get_shadow_phys_bits()      # with EPT: the modelled host's MAXPHYADDR (46)
    assert run_case("sim", case, limit) == [0] * len(CASES[case][0]) + [CASES[case][2]]


def test_shadow_paging_allows_52_bits() -> None:
    """Without TDP kvm_mmu_max_gfn is 52 bits whatever the host's MAXPHYADDR."""
    params = KvmParams(enable_ept=False)
    assert run_case("sim", "last-page-below-limit", 1 << 52, params) == [0]
    assert run_case("sim", "first-page-beyond-limit", 1 << 52, params) == [errno.EINVAL]
    assert run_case("sim", "first-page-beyond-limit", 1 << 46, params) == [0]


def test_memory_at_a_moved_or_deleted_slot_is_gone() -> None:
    """After a move the guest-physical pages are at the new GPA (same host memory); after a delete, nowhere."""
    buf = mmap.mmap(-1, PAGE)
    buf[:4] = b"\xde\xad\xbe\xef"
    with Kvm("sim") as kvm, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, 0x10000, buf)
        vcpu = vm.create_vcpu(0)
        hw = vcpu.fd.vcpu.hw
        assert hw.read_phys(0x10000, 4) == 0xEFBEADDE
        vm.set_user_memory_region(0, 0x20000, buf)
        assert hw.gpa_is_ram(0x20000) and not hw.gpa_is_ram(0x10000)
        assert hw.read_phys(0x20000, 4) == 0xEFBEADDE
        vm.set_user_memory_region(0, 0x20000, bytearray())   # memory_size 0: delete
        assert not hw.gpa_is_ram(0x20000) and hw.memslots == {}
    buf.close()


def test_memslot_at_follows_every_slot_change() -> None:
    """hw.memslot_at (kvm_vcpu_gfn_to_memslot) finds the slot holding a GPA, its first and last byte
    included, remembers no slot that a move or delete took away, and knows which slots are read-only."""
    buf = mmap.mmap(-1, 3 * PAGE)
    with Kvm("sim") as kvm, kvm.create_vm() as vm:
        ram, rom = memoryview(buf)[:2 * PAGE], memoryview(buf)[2 * PAGE:]
        vm.set_user_memory_region(0, 0x10000, ram)
        vm.set_user_memory_region(1, 0x40000, rom, readonly=True)
        hw = vm.create_vcpu(0).fd.vcpu.hw
        for gpa in (0x10000, 0x11FFF):
            assert hw.memslot_at(gpa)[:2] == (0x10000, 2 * PAGE)
            assert hw.gpa_is_ram(gpa) and not hw.gpa_is_readonly(gpa)
        assert hw.memslot_at(0x40FFF)[:2] == (0x40000, PAGE) and hw.gpa_is_readonly(0x40FFF)
        assert hw.memslot_at(0x12000) is None and hw.memslot_at(0xFFFF) is None
        assert hw.memslot_at(0x11000) is not None          # the last slot found, then moved away
        vm.set_user_memory_region(0, 0x80000, ram)
        assert hw.memslot_at(0x11000) is None and hw.memslot_at(0x81000)[:2] == (0x80000, 2 * PAGE)
        assert hw.memslot_at(0x40000) is not None
        vm.set_user_memory_region(1, 0x40000, bytearray())   # delete the ROM
        assert hw.memslot_at(0x40000) is None and not hw.gpa_is_readonly(0x40000)
        ram.release()
        rom.release()
    buf.close()


def _host_limit_and_tdp() -> tuple[int, bool]:
    """The real host's kvm_mmu_max_gfn inputs: TDP on (kvm_intel ept / kvm_amd npt) and CPUID 0x80000008's width.
    kvm_pvm runs guests on shadow paging.  The width comes from /proc/cpuinfo's address sizes (the
    kernel's x86_phys_bits: equal to CPUID's unless memory encryption took bits)."""
    from kvmsim.realkvm.backend import vendor_module

    module = vendor_module()
    param = {"kvm_intel": "ept", "kvm_amd": "npt"}.get(module)
    tdp = False
    if param is not None:
        tdp = Path(f"/sys/module/{module}/parameters/{param}").read_text().strip() in ("Y", "1")
    bits = 52
    if tdp:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("address sizes"):
                bits = int(line.split(":")[1].split()[0])
                break
    return bits, tdp


@pytest.mark.kvm
@pytest.mark.parametrize("case", sorted(CASES))
def test_sim_and_kvm_give_the_same_errno(case: str, monkeypatch) -> None:
    bits, tdp = _host_limit_and_tdp()
    monkeypatch.setattr(memslot, "HOST_CPUID_80000008_EAX", bits)   # the sim stands on this host
    limit = 1 << bits
    real = run_case("kvm", case, limit)
    sim = run_case("sim", case, limit, KvmParams(enable_ept=tdp))
    assert sim == real, f"{case}: sim {sim} / kvm {real} (host {bits} bits, tdp {tdp})"


# ---------------------------------------------------------------- check reports them at the memslot's line

HEAD = "name: t\ndescription: memslots\nguest: {asm: hlt, mode: long64}\n"


@pytest.mark.parametrize("memory,line,fragment", [
    ("memory:\n  - {gpa: 0, size: 2M}\n  - {gpa: 0x400000000000, size: 4K}\n", 6,
     "memslot 1: KVM_SET_USER_MEMORY_REGION: 0x400000000000+0x1000 ends beyond the 46-bit"),
    ("memory:\n  - {gpa: 0, size: 2M}\n  - {gpa: 0x3ffffffff000, size: 4K}\n", None, None),
    ("kvm: {enable_ept: false}\nmemory:\n  - {gpa: 0, size: 2M}\n  - {gpa: 0x400000000000, size: 4K}\n", None, None),
    ("memory:\n  - {gpa: 0, size: 2M}\n  - {gpa: 0xfffffffffffff000, size: 4K}\n", 6, "wraps around 2^64 (EINVAL)"),
    ("memory:\n  - {gpa: 0, size: 2M}\n  - {gpa: 0x100000, size: 4K}\n", 6, "overlaps slot 0 at 0x0+0x200000 (EEXIST)"),
    ("memory:\n  - {gpa: 0, size: 2M}\n  - {gpa: 0x200800, size: 4K}\n", 6, "not page aligned (EINVAL)"),
    ("memory:\n  - {gpa: 0, size: 2M}\n  - {gpa: 0x400000, size: 0x1800}\n", 6, "not a multiple of the page size"),
])
@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_at_the_memslot_line(tmp_path: Path, capsys, memory: str, line: int | None,
                                                   fragment: str | None, command: str) -> None:
    f = tmp_path / "m.yaml"
    f.write_text(HEAD + memory)
    status = main([command, str(f)])
    err = capsys.readouterr().err
    if line is None:
        assert status in (0, 1) and "error" not in err, err
    else:
        assert status == 2 and err.startswith(f"{f}:{line}: error: ") and fragment in err, err
