"""`kvmsim trace --backend kvm`: the real host's kvm tracepoints for a scenario, in the sim's format.

The host's own TP_printk text must read back through our parser and print again byte for byte
(our printers are the host kernel's), and the event sequence of mmio-read-no-decode must match the
sim's.  Labelled kvm_pvm differences: that host emits no kvm_entry/kvm_exit and sends every CPL0
guest instruction through its emulator, so its kvm_emulate_insn lines are a superset of the sim's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.loader import load_scenario
from kvmsim.trace.capture import capture_kvm, capture_sim
from kvmsim.trace.report import format_line, parse_report
from kvmsim.kvm.trace import format_event

pytestmark = pytest.mark.kvm
REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "scenarios" / "mmio-read-no-decode.yaml"


@pytest.fixture(scope="module")
def both():
    sc = load_scenario(SCENARIO)
    host = capture_kvm(sc)
    if host.unavailable:
        pytest.skip(f"host tracepoints unavailable: {host.unavailable}")
    return capture_sim(sc), host


def _seq(lines, event: str, keys: tuple[str, ...]) -> list[tuple]:
    return [tuple(t.fields[k] for k in keys) for t in lines if t.event == event]


@pytest.mark.parametrize("name", ["mmio-read-no-decode", "port-in", "msr", "cpuid", "mmio-write-prot32",
                                  "undecodable-then-out-long64", "msr-userspace", "triple-fault"])
def test_host_text_is_what_our_printers_print(name: str) -> None:
    """Every host line parses, and our printer gives back its exact bytes (kvm_pio's trailing space too)."""
    sc = load_scenario(REPO / "scenarios" / f"{name}.yaml")
    if "kvm" not in sc.backends:
        pytest.skip(f"{name} does not run on kvm")
    host = capture_kvm(sc)
    if host.unavailable:
        pytest.skip(f"host tracepoints unavailable: {host.unavailable}")
    assert host.lines
    for t in host.lines:
        assert t.fields, t.text
        assert format_event(t.event, t.fields) == t.text


def test_event_sequence_matches_the_sim(both) -> None:
    sim, host = both
    for event, keys in (("kvm_mmio", ("type", "len", "gpa", "val")), ("kvm_pio", ("rw", "port", "size", "count", "val")),
                        ("kvm_userspace_exit", ("reason", "errno"))):
        assert _seq(host.lines, event, keys) == _seq(sim.lines, event, keys), event
    sim_insns = _seq(sim.lines, "kvm_emulate_insn", ("rip", "insn", "flags", "failed"))
    host_insns = _seq(host.lines, "kvm_emulate_insn", ("rip", "insn", "flags", "failed"))
    if host.module == "kvm_pvm":    # labelled: the whole guest runs in the emulator, no VMX exits
        it = iter(host_insns)
        assert all(any(h == s for h in it) for s in sim_insns), "sim emulations are not a subsequence of the host's"
        assert not [t for t in host.lines if t.event in ("kvm_exit", "kvm_entry")]
    else:
        assert host_insns == sim_insns
        assert _seq(host.lines, "kvm_exit", ("exit_reason",)) == _seq(sim.lines, "kvm_exit", ("exit_reason",))


def test_cli_backend_kvm_prints_the_same_layout(capsys, both) -> None:
    _, host = both
    assert main(["trace", "--backend", "kvm", str(SCENARIO), "-e", "kvm_mmio"]) == 0
    out = capsys.readouterr().out
    lines = parse_report(out)
    assert [t.fields for t in lines] == [t.fields for t in host.lines if t.event == "kvm_mmio"]
    assert all(format_line(t) in out for t in lines)
    if host.module == "kvm_pvm":
        assert "# host kvm_pvm" in out


IO_EVENTS = ("kvm_mmio", "kvm_pio", "kvm_userspace_exit", "kvm_msr", "kvm_fast_mmio", "kvm_hypercall")


@pytest.mark.parametrize("name", ["port-in", "serial-hello-real16", "mmio-write-prot32", "msr-userspace",
                                  "rep-insb-long64", "selfmod-code-long64"])
def test_io_tracepoints_match_the_host_line_for_line(name: str) -> None:
    """The I/O half of the trace (what the guest asked of the VMM) is the host's, text and order; the
    exit half is vendor-specific (kvm_pvm has no VMX exits) and is not compared here."""
    sc = load_scenario(REPO / "scenarios" / f"{name}.yaml")
    host = capture_kvm(sc)
    if host.unavailable:
        pytest.skip(f"host tracepoints unavailable: {host.unavailable}")
    sim = capture_sim(sc)
    pick = lambda lines: [(t.event, t.text) for t in lines if t.event in IO_EVENTS]  # noqa: E731
    assert pick(sim.lines) and pick(host.lines) == pick(sim.lines)
