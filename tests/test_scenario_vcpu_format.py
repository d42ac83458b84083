"""Scenario format, issue 10 point 9a: `vcpu: {regs, sregs}`, `guest: {load, entry}`, `vmm: {on_hlt}`.

Bad values are `file:line: error: field ...: message` with status 2 from `check` and `run` alike;
KVM_SET_SREGS's EINVAL cases are refused by the sim's own ioctl exactly where /dev/kvm refuses
them (the kvm half of each differential test carries the `kvm` marker).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim import Kvm
from kvmsim.cli import main
from kvmsim.errors import BackendError, ScenarioError
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import make_machine, run_scenario
from badinput import assert_bad_input
from backends import BACKENDS

REPO = Path(__file__).resolve().parents[1]



def _head(mode: str = "prot32", guest_extra: str = "") -> str:
    return f"name: t\ndescription: vcpu format\nguest: {{asm: hlt, mode: {mode}{guest_extra}}}\n"


# name: (YAML, line the error names, text the message contains); every line number counts from 1
# with the 3-line head above.
SCHEMA_CASES = {
    "unknown-gpr": (_head() + "vcpu:\n  regs: {raxx: 1}\n", 5, "unknown field 'raxx' in vcpu.regs (did you mean 'rax'?)"),
    "unknown-sreg": (_head() + "vcpu:\n  sregs: {cr5: 1}\n", 5, "unknown field 'cr5' in vcpu.sregs"),
    "unknown-segment-field": (_head() + "vcpu:\n  sregs:\n    cs: {dlp: 0}\n", 6,
                              "unknown field 'dlp' in vcpu.sregs.cs (did you mean 'dpl'?)"),
    "unknown-vcpu-key": (_head() + "vcpu:\n  fpu: {}\n", 5, "unknown field 'fpu' in vcpu"),
    "gpr-beyond-64-bits": (_head() + "vcpu:\n  regs: {rax: 0x10000000000000000}\n", 5, "vcpu.regs.rax"),
    "negative-gpr": (_head() + "vcpu:\n  regs: {rsp: -1}\n", 5, "vcpu.regs.rsp"),
    "rflags-reserved": (_head() + "vcpu:\n  regs: {rflags: 0x8}\n", 5, "rflags 0x8 sets reserved bits 0x8"),
    "dpl-4": (_head() + "vcpu:\n  sregs:\n    ds: {dpl: 4}\n", 6, "vcpu.sregs.ds.dpl"),
    "type-16": (_head() + "vcpu:\n  sregs:\n    ds: {type: 16}\n", 6, "vcpu.sregs.ds.type"),
    "present-2": (_head() + "vcpu:\n  sregs:\n    ds: {present: 2}\n", 6, "vcpu.sregs.ds.present"),
    "limit-beyond-32-bits": (_head() + "vcpu:\n  sregs:\n    ss: {limit: 0x100000000}\n", 6, "vcpu.sregs.ss.limit"),
    "selector-beyond-16-bits": (_head() + "vcpu:\n  sregs:\n    fs: {selector: 0x10000}\n", 6,
                                "vcpu.sregs.fs.selector"),
    "gdt-limit-beyond-16-bits": (_head() + "vcpu:\n  sregs:\n    gdt: {limit: 0x10000}\n", 6,
                                 "vcpu.sregs.gdt.limit"),
    "cr0-high-bits": (_head() + "vcpu:\n  sregs: {cr0: 0x100000031}\n", 5, "sets bits 63:32 (KVM_SET_SREGS: EINVAL)"),
    "cr0-pg-without-pe": (_head() + "vcpu:\n  sregs: {cr0: 0x80000010}\n", 5, "PG without PE (KVM_SET_SREGS: EINVAL)"),
    "cr0-nw-without-cd": (_head() + "vcpu:\n  sregs: {cr0: 0x20000031}\n", 5, "NW without CD"),
    "cr4-never-allowed": (_head() + "vcpu:\n  sregs: {cr4: 0x4000}\n", 5, "bits KVM never allows (0x4000"),
    "efer-unmodelled": (_head() + "vcpu:\n  sregs: {efer: 0x1000}\n", 5, "kvmsim models SCE, LME, LMA and NXE"),
    "apic-base-reserved": (_head() + "vcpu:\n  sregs: {apic_base: 0xfee00901}\n", 5, "reserved bits 0x1"),
    "apic-x2apic-disabled": (_head() + "vcpu:\n  sregs: {apic_base: 0xfee00500}\n", 5,
                             "x2APIC enabled with the APIC disabled"),
    # kvm_is_valid_sregs on the boot state with the overrides: the field to fix is named
    "long64-cr4-without-pae": (_head("long64") + "vcpu:\n  sregs: {cr4: 0x600}\n", 5,
                               "vcpu.sregs.cr4: EFER.LME with CR0.PG (64-bit paging) needs CR4.PAE"),
    "long64-efer-without-lma": (_head("long64") + "vcpu:\n  sregs: {efer: 0x100}\n", 5,
                                "vcpu.sregs.efer: EFER.LME with CR0.PG (64-bit paging) needs EFER.LMA"),
    "long64-cr3-beyond-maxphyaddr": (_head("long64") + "vcpu:\n  sregs: {cr3: 0x4000000000004000}\n", 5,
                                     "at or above MAXPHYADDR (46)"),
    "prot32-lma-without-paging": (_head() + "vcpu:\n  sregs: {efer: 0x500}\n", 5,
                                  "vcpu.sregs.efer: EFER.LMA without both EFER.LME and CR0.PG"),
    "prot32-cs-l": (_head() + "vcpu:\n  sregs:\n    cs: {l: 1}\n", 6,
                    "vcpu.sregs.cs: a 64-bit code segment (cs.l=1) outside 64-bit paging"),
    "long64-leaves-paging": (_head("long64") + "vcpu:\n  sregs: {cr0: 0x31}\n", 5,
                             "vcpu.sregs.cr0: EFER.LMA without both EFER.LME and CR0.PG"),
    "cr4-feature-not-in-cpuid": (_head("long64") + "vcpu:\n  sregs: {cr4: 0x1620}\n", 5,
                                 "cr4 0x1620 sets bits 0x1000 whose feature the vCPU's CPUID does not have"),
    "on-hlt-unknown": (_head() + "vmm: {on_hlt: wait}\n", 4, "field vmm.on_hlt"),
    "hlt-stop-with-resume": (_head() + "vmm: {on_hlt: resume}\nexpect:\n  stop: {reason: hlt}\n", 6,
                             "expects a hlt stop but vmm.on_hlt: resume re-enters"),
    "unknown-vmm-key": (_head() + "vmm: {on_halt: resume}\n", 4, "did you mean 'on_hlt'"),
    "entry-in-reset-mode": ("name: t\ndescription: x\nguest:\n  asm: hlt\n  mode: reset\n  entry: 0x10\n", 6,
                            "mode reset starts at the reset vector"),
    "real16-entry-beyond-64k": ("name: t\ndescription: x\nguest:\n  asm: hlt\n  mode: real16\n  entry: 0x10000\n", 6,
                                "not reachable with CS = 0"),
    "entry-not-a-symbol-or-number": ("name: t\ndescription: x\nguest:\n  asm: hlt\n  mode: prot32\n  entry: '1x'\n",
                                     6, "field guest.entry"),
    "load-beyond-64-bits": ("name: t\ndescription: x\nguest:\n  asm: hlt\n  mode: prot32\n"
                            "  load: 0x10000000000000000\n", 6, "field guest.load"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_bad_vcpu_fields_name_file_line_and_field(case: str, tmp_path: Path) -> None:
    text, line, fragment = SCHEMA_CASES[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(f)
    assert exc.value.line == line, exc.value.msg
    assert fragment in exc.value.msg


# Rejected only once the guest is built (preflight): `check` and `run` say the same, status 2.
PREFLIGHT_CASES = {
    "entry-symbol-missing": ("name: t\ndescription: x\nguest:\n  asm: |\n    _start: hlt\n    alt: hlt\n"
                             "  mode: prot32\n  entry: atl\n", 8,
                             "field guest.entry: no symbol 'atl' in the guest (did you mean 'alt'?)"),
    "load-outside-memory": ("name: t\ndescription: x\nguest:\n  asm: hlt\n  mode: prot32\n  load: 0x400000\n", None,
                            "not inside any memory slot"),
    "load-on-the-boot-tables": ("name: t\ndescription: x\nguest:\n  asm: hlt\n  mode: long64\n  load: 0x5000\n", 6,
                                "overlaps the long64 boot tables at 0x2000-0x9fff"),
    "real16-load-beyond-64k": ("name: t\ndescription: x\nguest:\n  asm: hlt\n  mode: real16\n  load: 0x10000\n", 6,
                               "field guest.load: real16 entry 0x10000 is not reachable with CS = 0"),
    "boot-tables-outside-ram": ("name: t\ndescription: x\nguest:\n  asm: hlt\n  mode: prot32\n  load: 0x100000\n"
                                "memory: [{gpa: 0x100000, size: 1M}]\n", 7, "boot tables need writable RAM"),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(PREFLIGHT_CASES))
def test_check_rejects_what_run_rejects(case: str, command: str, tmp_path: Path, capsys) -> None:
    text, line, fragment = PREFLIGHT_CASES[case]
    assert_bad_input(command, tmp_path / f"{case}.yaml", text, line, fragment, capsys)


# ---------------------------------------------------------------- KVM_SET_SREGS on both backends

def _boot_sregs_einval_cases():
    """(name, change to a real-mode reset vCPU's sregs) pairs the kernel answers with EINVAL."""
    def pg_without_pe(s): s.cr0 = 0x80000010
    def nw_without_cd(s): s.cr0 = 0x20000010
    def cr0_high(s): s.cr0 = 1 << 32 | 0x10
    def lma_without_paging(s): s.efer = 0x500
    def cs_l_without_lma(s): s.cs.l = 1
    def lme_pg_without_pae(s): s.cr0, s.efer = 0x80000011, 0x500
    def lme_pg_without_lma(s): s.cr0, s.cr4, s.efer = 0x80000011, 0x20, 0x100
    def lme_pg_cr3_bit63(s): s.cr0, s.cr4, s.efer, s.cr3 = 0x80000011, 0x20, 0x500, 1 << 63 | 0x4000
    def apic_reserved(s): s.apic_base = 0xFEE00901
    def x2apic_without_enable(s): s.apic_base = 0xFEE00500
    def cr4_smxe(s): s.cr4 = 1 << 14
    return [pg_without_pe, nw_without_cd, cr0_high, lma_without_paging, cs_l_without_lma, lme_pg_without_pae,
            lme_pg_without_lma, lme_pg_cr3_bit63, apic_reserved, x2apic_without_enable, cr4_smxe]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change", _boot_sregs_einval_cases(), ids=lambda f: f.__name__)
def test_set_sregs_einval_as_the_kernel(backend: str, change) -> None:
    with Kvm(backend) as kvm, kvm.create_vm() as vm:
        vcpu = vm.create_vcpu(0)
        before = vcpu.get_sregs()
        bad = vcpu.get_sregs()
        change(bad)
        with pytest.raises(BackendError, match=r"KVM_SET_SREGS failed: EINVAL \(Invalid argument\)"):
            vcpu.set_sregs(bad)
        after = vcpu.get_sregs()
        assert bytes(after) == bytes(before)        # nothing applied


@pytest.mark.parametrize("backend", BACKENDS)
def test_valid_sregs_and_regs_are_taken(backend: str) -> None:
    """A 64-bit state (LME|LMA, PG, PAE), an apic_base move and RFLAGS without bit 1 (KVM sets it)."""
    with Kvm(backend) as kvm, kvm.create_vm() as vm:
        vcpu = vm.create_vcpu(0)
        s = vcpu.get_sregs()
        s.cr0, s.cr4, s.efer, s.cr3 = 0x80000011, 0x20, 0x500, 0x4000
        s.apic_base = 0xFED00900
        vcpu.set_sregs(s)
        got = vcpu.get_sregs()
        assert (got.cr0 & 0x80000001, got.cr4, got.efer, got.cr3, got.apic_base) == (
            0x80000001, 0x20, 0x500, 0x4000, 0xFED00900)
        r = vcpu.get_regs()
        r.rflags, r.rbx = 0, 0x1234
        vcpu.set_regs(r)
        assert (vcpu.get_regs().rflags, vcpu.get_regs().rbx) == (0x2, 0x1234)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scenario_state_is_applied_over_the_boot_state(backend: str) -> None:
    """Given fields replace the boot values, omitted ones (FS's type and limit, CS) stay."""
    sc = load_scenario(REPO / "scenarios" / "vcpu-sregs-sse-prot32.yaml")
    with make_machine(sc, backend) as m:
        s, r = m.vcpu.get_sregs(), m.vcpu.get_regs()
    assert s.cr4 == 0x600 and s.cr0 & 0xFFFFFFFF == 0x31 and s.efer == 0
    assert (s.fs.selector, s.fs.base, s.fs.limit, s.fs.type, s.fs.present, s.fs.db, s.fs.g) == (
        0x10, 0x180000, 0xFFFFFFFF, 3, 1, 1, 1)
    assert (s.cs.selector, s.cs.base, s.cs.limit, s.cs.l, s.cs.db) == (0x08, 0, 0xFFFFFFFF, 0, 1)
    assert (r.rsp, r.rbx, r.rip, r.rflags) == (0x70000, 0x5EED, m.image.entry, 0x2)


def test_cpuid_dependent_cr4_bits_follow_the_scenarios_cpuid(tmp_path: Path, capsys) -> None:
    """CR4.SMEP needs CPUID.7:EBX.SMEP in the table the vCPU gets: the sim's default has it, a
    scenario's kvm.cpuid (overrides or a whole table) may take it away; `check` says so at cr4."""
    head = "name: t\ndescription: x\nguest: {asm: hlt, mode: long64}\n"
    ok = tmp_path / "ok.yaml"
    ok.write_text(head + "vcpu:\n  sregs: {cr4: 0x100620}\n")
    assert main(["check", str(ok)]) == 0
    for name, cpuid in [("override", "kvm:\n  cpuid: [{function: 7, ebx: 0}]\n"),
                        ("replace", "kvm:\n  cpuid: {replace: true, entries: [{function: 0, eax: 7}, "
                                    "{function: 7, ebx: 0x1}]}\n")]:
        f = tmp_path / f"{name}.yaml"
        f.write_text(head + cpuid + "vcpu:\n  sregs: {cr4: 0x100620}\n")
        for command in ("check", "run"):
            assert main([command, str(f)]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"{f}:7: error: field vcpu.sregs.cr4: cr4 0x100620 sets bits 0x100000 whose "
                                  "feature the vCPU's CPUID does not have"), err
    # with SMEP in the override (bit 7) the same state is taken by the sim's KVM_SET_SREGS
    f = tmp_path / "smep.yaml"
    f.write_text(head + "kvm:\n  cpuid: [{function: 7, ebx: 0x80}]\nvcpu:\n  sregs: {cr4: 0x100620}\n")
    assert main(["check", str(f)]) == 0
    res = run_scenario(load_scenario(f))
    assert res.sregs["cr4"] == 0x100620 and res.stop.reason == "hlt"


def test_a_state_the_host_refuses_is_bad_input_at_vcpu_sregs(tmp_path: Path, monkeypatch) -> None:
    """An EINVAL from KVM_SET_SREGS at set-up (a host CPUID that lacks what the sim's has) is a
    status-2 error at vcpu.sregs naming the ioctl, not a crash."""
    from kvmsim.kvm import kvm_main

    f = tmp_path / "s.yaml"
    f.write_text("name: t\ndescription: x\nguest: {asm: hlt, mode: long64}\nvcpu:\n  sregs: {cr4: 0x620}\n")
    sc = load_scenario(f)

    calls, real = [], kvm_main.SimVcpuFd.set_sregs

    def refuse_the_second(self, sregs):     # the boot set-up's goes through, the scenario's fails
        calls.append(1)
        if len(calls) == 2:
            raise BackendError("KVM_SET_SREGS failed: EINVAL (Invalid argument)")
        real(self, sregs)
    monkeypatch.setattr(kvm_main.SimVcpuFd, "set_sregs", refuse_the_second)
    with pytest.raises(ScenarioError) as exc:
        make_machine(sc)
    assert exc.value.line == 5
    assert exc.value.msg == "field vcpu.sregs: KVM_SET_SREGS failed: EINVAL (Invalid argument)"


# ---------------------------------------------------------------- vmm.on_hlt

def test_on_hlt_resume_is_bounded_by_max_exits_and_says_so() -> None:
    res = run_scenario(load_scenario(REPO / "scenarios" / "vmm-hlt-resume-limit-long64.yaml"))
    assert res.stop.reason == "limit"
    assert "max_exits 20 reached" in res.stop.detail
    assert "halted 20 times under vmm.on_hlt: resume (last exit: KVM_EXIT_HLT)" in res.stop.detail
    assert [e.reason for e in res.userspace] == ["HLT"] * 20
    assert res.regs["rbx"] == 19                    # the guest ran on after 19 of its HLTs


def test_on_hlt_resume_is_bounded_by_wall_seconds(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text("name: t\ndescription: x\nguest:\n  mode: long64\n  asm: |\n    1: cli\n       hlt\n       jmp 1b\n"
                 "vmm: {on_hlt: resume}\nlimits: {wall_seconds: 0.3, max_exits: 1000000000}\n")
    res = run_scenario(load_scenario(f))
    assert res.stop.reason == "limit" and "wall_seconds" in res.stop.detail
    assert "under vmm.on_hlt: resume" in res.stop.detail


def test_on_hlt_stop_is_the_default(tmp_path: Path) -> None:
    sc = load_scenario(REPO / "scenarios" / "vmm-hlt-resume-limit-long64.yaml")
    assert sc.vmm.on_hlt == "resume"
    f = tmp_path / "d.yaml"
    f.write_text("name: t\ndescription: x\nguest:\n  mode: long64\n  asm: |\n    1: cli\n       hlt\n       jmp 1b\n")
    res = run_scenario(load_scenario(f))
    assert (res.stop.reason, len(res.userspace)) == ("hlt", 1)
