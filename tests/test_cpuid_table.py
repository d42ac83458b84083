"""kvm.cpuid: {replace: true, entries: [...]}: KVM_SET_CPUID2 with exactly the scenario's table,
KVM_CPUID_FLAG_SIGNIFCANT_INDEX set by leaf; the list form keeps overriding leaves of the
default table; bad tables are status-2 file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.kvm.cpuid import default_cpuid_entries
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import make_machine
from kvmsim.uapi import KVM_CPUID_FLAG_SIGNIFCANT_INDEX
from kvmsim.vmm.cpuid import INDEXED_LEAVES
from badinput import assert_bad_input

HEAD = "name: t\ndescription: cpuid\nguest: {asm: hlt, mode: long64}\nkvm:\n  cpuid:\n"

CASES = {
    "index-on-unindexed-leaf": ("    replace: true\n    entries:\n      - {function: 0}\n"
                                "      - {function: 1, index: 2}\n", 9, "has no subleaves"),
    "duplicate-entry": ("    replace: true\n    entries:\n      - {function: 4, index: 1}\n"
                        "      - {function: 4, index: 1, eax: 2}\n", 9, "already entries[0]"),
    "vaddr-bits": ("    replace: true\n    entries:\n      - {function: 0x80000008, eax: 0x2030}\n", 8,
                   "0, 48 or 57 (KVM: EINVAL)"),
    "replace-missing": ("    entries:\n      - {function: 0}\n", 5, "kvm.cpuid.replace: required field missing"),
    "register-too-wide": ("    replace: true\n    entries:\n      - {function: 0, eax: 0x100000000}\n", 8,
                          "less than or equal to 4294967295"),
    "unknown-key": ("    replace: true\n    entries:\n      - {function: 0, flags: 1}\n", 8, "flags"),
    "too-many": ("    replace: true\n    entries:\n" + "".join(f"      - {{function: {0x40000000 + i}}}\n"
                                                            for i in range(257)), 7, "at most 256"),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_cpuid_table_is_status_2_with_file_line(case: str, command: str, tmp_path: Path, capsys) -> None:
    body, line, fragment = CASES[case]
    assert_bad_input(command, tmp_path / f"{case}.yaml", HEAD + body, line, fragment, capsys)


def _sim_table(tmp_path: Path, body: str) -> list[tuple[int, int, int, int, int, int, int]]:
    f = tmp_path / "s.yaml"
    f.write_text(HEAD + body)
    with make_machine(load_scenario(f), "sim") as m:
        return [(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in m.vcpu.get_cpuid()]


def test_replace_sets_exactly_the_table_with_significant_index_by_leaf(tmp_path: Path) -> None:
    got = _sim_table(tmp_path, "    replace: true\n    entries:\n      - {function: 0, eax: 0x1f}\n"
                               "      - {function: 0x1f, index: 2, edx: 7}\n      - {function: 0x24}\n"
                               "      - {function: 0x8000001d, index: 3}\n      - {function: 0x80000000}\n")
    sig = KVM_CPUID_FLAG_SIGNIFCANT_INDEX
    assert got == [(0, 0, 0, 0x1f, 0, 0, 0), (0x1f, 2, sig, 0, 0, 0, 7), (0x24, 0, sig, 0, 0, 0, 0),
                   (0x8000001d, 3, sig, 0, 0, 0, 0), (0x80000000, 0, 0, 0, 0, 0, 0)]


def test_the_list_form_still_overrides_leaves_of_the_default_table(tmp_path: Path) -> None:
    got = _sim_table(tmp_path, "    - {function: 0x40000001, eax: 0x1234}\n")
    want = [(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in default_cpuid_entries()]
    i = next(i for i, w in enumerate(want) if w[0] == 0x40000001)
    want[i] = want[i][:3] + (0x1234,) + want[i][4:]
    assert got == want
    assert _sim_table(tmp_path, "    replace: false\n    entries:\n      - {function: 0x40000001, eax: 0x1234}\n") == want


def test_indexed_leaves_are_the_kernels() -> None:
    """cpuid_function_is_indexed (arch/x86/include/asm/cpuid/api.h) as of Linux 6.18."""
    assert sorted(INDEXED_LEAVES) == [0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1E, 0x1F,
                                      0x24, 0x8000001D]
    assert all(e.flags == (KVM_CPUID_FLAG_SIGNIFCANT_INDEX if e.function in INDEXED_LEAVES else 0)
               for e in default_cpuid_entries())


@pytest.mark.kvm
def test_kvm_takes_the_replacing_table(tmp_path: Path) -> None:
    """On /dev/kvm, KVM_GET_CPUID2 after the replace shows exactly the scenario's entries and flags.
    kvm_pvm rewrites leaves 1 and 7 with its own feature bits and adds its own leaf 0xd subleaves
    (artefacts of that module, so the shipped scenario leaves 1, 7 and 0xd out); every other leaf
    comes back as given there too."""
    from kvmsim.realkvm.backend import vendor_module

    f = tmp_path / "k.yaml"
    f.write_text(HEAD + "    replace: true\n    entries:\n      - {function: 0, eax: 0xd, ebx: 0x756e6547, "
                 "edx: 0x49656e69, ecx: 0x6c65746e}\n      - {function: 2, eax: 0x11}\n"
                 "      - {function: 4, index: 0, eax: 0x21}\n      - {function: 4, index: 1, eax: 0x22}\n"
                 "      - {function: 0xb, index: 1, edx: 3}\n      - {function: 0x80000000, eax: 0x80000000}\n"
                 "      - {function: 1, eax: 0x50657, ecx: 0x80000000}\n")
    sc = load_scenario(f)
    with make_machine(sc, "kvm") as m:
        got = {(e.function, e.index): (e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in m.vcpu.get_cpuid()}
    pvm = vendor_module() == "kvm_pvm"
    extra = {k for k in got if (k[0], k[1]) not in {(e.function, e.index) for e in sc.kvm.cpuid.entries}}
    assert {f for f, _ in extra} <= ({0xD} if pvm else set())
    for e in sc.kvm.cpuid.entries:
        if e.function == 1 and pvm:
            continue
        flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX if e.function in INDEXED_LEAVES else 0
        assert got[e.function, e.index] == (flags, e.eax, e.ebx, e.ecx, e.edx), hex(e.function)
