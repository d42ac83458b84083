"""kvmsim/kut without a build: the unittests.cfg parser (scripts/common.bash's reading), the
run/skip decisions (runtime.bash run()'s order and wording, then kvmsim's table), and verdicts
from a serial log and exit status (run_tests.sh's rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.kut import outcome
from kvmsim.kut.cfg import parse_cfg, parse_duration
from kvmsim.kut.decide import NOT_MODELLED, Settings, decide, select

CFG = '''
# comment line
[vmexit_cpuid]
file = vmexit.flat
test_args = 'cpuid'
groups = vmexit

[old_style]
file = emulator.flat
extra_params = -cpu qemu64,+x2apic -append "one  two" -m 2G
   timeout = 2m

[multi]
file = access_test.flat
qemu_params = """-cpu max
  -m 256"""
smp = 2
arch = x86_64
check = /sys/module/kvm/parameters/force_emulation_prefix=Y /proc/sys/kernel/nmi_watchdog=0
groups = vmx nodefault
accel = tcg
unknown_key = ignored

[]
file = nameless.flat
'''


def by_name() -> dict:
    return {t.name: t for t in parse_cfg(CFG)}


def test_sections_and_keys_as_common_bash_reads_them() -> None:
    t = by_name()
    assert list(t) == ["vmexit_cpuid", "old_style", "multi"]       # [] names nothing (bash skips it)
    c = t["vmexit_cpuid"]
    assert (c.file, c.args, c.groups, c.smp_count, c.line) == ("vmexit.flat", "cpuid", ["vmexit"], 1, 3)
    o = t["old_style"]
    assert o.args == "one  two"                 # -append "..." of extra_params, quotes removed
    assert o.cpu == "qemu64,+x2apic" and o.mem_mib == 2048 and o.timeout_seconds == 120
    m = t["multi"]
    assert m.qemu_params == "-cpu max -m 256" and m.mem_mib == 256   # a triple-quoted value spans lines
    assert m.smp_count == 2 and m.arch == "x86_64" and m.accel == "tcg"
    assert m.check == [("/sys/module/kvm/parameters/force_emulation_prefix", "Y"),
                       ("/proc/sys/kernel/nmi_watchdog", "0")]
    assert m.groups == ["vmx", "nodefault"]


def test_defaults_and_durations() -> None:
    c = by_name()["vmexit_cpuid"]
    assert c.mem_mib == 128 and c.timeout_seconds == 90 and c.cpu is None   # QEMU pc, runtime.bash's 90s
    assert [parse_duration(s) for s in ("30", "10s", "1.5m", "1h")] == [30, 10, 90, 3600]
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_run_tests_order_and_wording(tmp_path: Path) -> None:
    t = by_name()["multi"]
    s = Settings(arch="x86_64")
    assert decide(t, s).reason == "test marked as manual run only"
    s.run_nodefault = True
    assert decide(t, s).reason == "tcg only, but ACCEL=kvm"
    t.accel = ""
    assert decide(t, s).reason == ("/sys/module/kvm/parameters/force_emulation_prefix not equal to Y "
                                   "(kvmsim: N, kvm.force_emulation_prefix)")
    s.kvm_params = {"force_emulation_prefix": True}          # --kvm-param force_emulation_prefix=Y
    s.flat_dir = tmp_path
    assert decide(t, s).reason == "Test file 'access_test.flat' not found"
    (tmp_path / "access_test.flat").write_bytes(b"")
    assert decide(t, s) == decide(t, s) and decide(t, s).reason == "smp = 2"
    s.smp1 = True
    d = decide(t, s)
    assert d.run and "run on 1 vCPU" in d.reason
    s.arch = "i386"
    assert decide(t, s).reason == "x86_64 only"


def test_unknown_check_file_is_not_modelled() -> None:
    t = parse_cfg("[x]\nfile = x.flat\ncheck = /sys/devices/system/clocksource/clocksource0/current_clocksource=tsc\n")[0]
    d = decide(t, Settings())
    assert not d.run and d.reason.endswith("not equal to tsc (not modelled by kvmsim)")


@pytest.mark.parametrize("section, why", [
    ("file = vmx.flat", "nested VMX"),
    ("file = svm.flat", "nested SVM"),
    ("file = apic.flat\nqemu_params = -cpu max,+vmx", "nested VMX"),
    ("file = hyperv_stimer.flat", "Hyper-V"),
    ("file = emulator.flat\nqemu_params = -device edu", "-device"),
])
def test_not_modelled_table(section: str, why: str) -> None:
    t = parse_cfg(f"[t]\n{section}\n")[0]
    d = decide(t, Settings())
    assert not d.run and why in d.reason


def test_not_modelled_reasons_are_one_line() -> None:
    assert all(why and "\n" not in why for _pred, why in NOT_MODELLED)


def test_plain_test_runs() -> None:
    assert decide(by_name()["vmexit_cpuid"], Settings()).run


def test_selection_by_name_and_group() -> None:
    tests = parse_cfg(CFG)
    assert [t.name for t in select(tests, ["old_style", "vmexit_cpuid"], Settings())] == ["vmexit_cpuid", "old_style"]
    assert [t.name for t in select(tests, [], Settings(only_group="vmx"))] == ["multi"]
    assert decide(by_name()["multi"], Settings(only_group="vmx")).reason != "test marked as manual run only"
    with pytest.raises(KeyError):
        select(tests, ["nosuch"], Settings())


# ---------------------------------------------------------------- verdicts

LOG = "enabling apic\nPASS: cpuid\nSKIP: no foo\nFAIL: bar\nSUMMARY: 3 tests, 1 unexpected failures, 1 skipped\n"


def test_status_rules() -> None:
    ok = outcome.from_run("t", "isa-debug-exit", 1, "", "PASS: a\nSUMMARY: 1 tests\n", "90s")   # exit(0): status 1
    assert ok.status == "PASS" and ok.exit_status == 1 and ok.line() == "PASS t (1 tests)"
    skip = outcome.from_run("t", "isa-debug-exit", 77, "", "SKIP: a\nSUMMARY: 1 tests, 1 skipped\n", "90s")
    assert skip.status == "SKIP" and skip.exit_status == 77
    bad = outcome.from_run("t", "isa-debug-exit", 3, "", LOG, "90s")
    assert bad.status == "FAIL" and bad.line() == "FAIL t (3 tests, 1 unexpected failures, 1 skipped)"
    assert bad.reports == [("PASS", "cpuid"), ("SKIP", "no foo"), ("FAIL", "bar")]
    assert outcome.from_run("t", "isa-debug-exit", 127, "", "", "90s").line() == "FAIL t (aborted)"
    assert outcome.from_run("t", "isa-debug-exit", 0x201, "", "", "90s").exit_status == 1   # low 8 bits
    bye = outcome.from_run("t", "bochs-shutdown", None, 'wrote "Shutdown"', "SUMMARY: 1 tests\n", "90s")
    assert bye.status == "FAIL"          # QEMU's exit 0 without the debug exit is a failure (vmm.bash)


def test_other_stops_fail_with_their_reason() -> None:
    lim = outcome.from_run("t", "limit", None, "max_guest_insns 100 reached", "PASS: a\n", "10s")
    assert lim.line() == "FAIL t (timeout; duration=10s (max_guest_insns 100 reached))"
    sd = outcome.from_run("t", "shutdown", None, "triple fault", LOG, "90s")
    assert sd.status == "FAIL" and "shutdown: triple fault" in sd.reason and "3 tests" in sd.reason
    err = outcome.from_error("t", "kvmsim bug", RuntimeError("boom\nstate"))
    assert err.line() == "FAIL t (kvmsim bug: RuntimeError: boom)"


def test_summary_only_from_the_last_five_lines() -> None:
    assert outcome.extract_summary("SUMMARY: 1 tests\n" + "x\n" * 5) == ""
    assert outcome.extract_summary("SUMMARY: 2 tests\r\nx\n") == "(2 tests)"
