"""`kvmsim stacks`: bpftrace histogram shape, golden call chains (the kernel's, see x86.c/vmx.c), counts
checked against the run's exit log and probe stream, folded-stack grammar, flame graph SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from kvmsim.cli import main
from kvmsim.scenario.loader import load_scenario
from kvmsim.trace import stacks
from kvmsim.trace.capture import capture_sim
from kvmsim.trace.flamegraph import render_svg

REPO = Path(__file__).resolve().parents[2]
SYSCALL = ("kvm_arch_vcpu_ioctl_run", "kvm_vcpu_ioctl", "__x64_sys_ioctl", "do_syscall_64",
           "entry_SYSCALL_64_after_hwframe")
GUEST_ENTRY = ("vmx_handle_exit", "vcpu_enter_guest", "vcpu_run") + SYSCALL

# Golden shapes, innermost first, as the kernel's source calls them (x86.c, vmx.c, mmu.c).
HANDLE_UD = ("x86_emulate_insn", "x86_emulate_instruction", "kvm_emulate_instruction", "handle_ud",
             "handle_exception_nmi") + GUEST_ENTRY
EPT_MISCONFIG = ("x86_emulate_insn", "x86_emulate_instruction", "kvm_mmu_page_fault",
                 "handle_ept_misconfig") + GUEST_ENTRY
EPT_VIOLATION = ("x86_emulate_insn", "x86_emulate_instruction", "kvm_mmu_page_fault",
                 "handle_ept_violation") + GUEST_ENTRY
COMPLETE_MMIO = ("x86_emulate_insn", "x86_emulate_instruction", "kvm_emulate_instruction",
                 "complete_emulated_mmio") + SYSCALL

VMMCALL_S = """\
        .include "kvmsim.inc"
        GUEST_ENTRY
        movl    $11, %eax
        movl    $0xffff, %ebx
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        xorl    %esi, %esi
        vmmcall                 # AMD's hypercall on an Intel host: #UD, handle_ud emulates it
        movl    $0x1234, %eax
        vmmcall
        EXIT    0
"""


@pytest.fixture(scope="module")
def vmmcall(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("vmmcall")
    (d / "vmmcall.S").write_text(VMMCALL_S)
    (d / "vmmcall.yaml").write_text("name: vmmcall-ud\ndescription: VMMCALL on Intel takes #UD; handle_ud emulates it\n"
                                    "guest: {source: vmmcall.S, mode: long64}\nbackends: [sim]\n"
                                    "expect:\n  stop: {reason: debug-exit, code: 0}\n")
    return d / "vmmcall.yaml"


@pytest.fixture(scope="module")
def mmio():
    return capture_sim(load_scenario(REPO / "scenarios" / "mmio-read-no-decode.yaml"))


def test_handle_ud_path(vmmcall) -> None:
    cap = capture_sim(load_scenario(vmmcall))
    hist = stacks.histogram(cap.events, "x86_emulate_insn")
    ud_exits = [ev for ev in cap.events if ev.kind == "tp" and ev.name == "kvm_exit" and ev.fields["exit_reason"] == 0
                and ev.fields["intr_info"] & 0x7FF == 0x306]          # hardware exception, vector 6 (#UD)
    assert ud_exits and hist == Counter({HANDLE_UD: len(ud_exits)})


def test_vmx_handle_exit_paths(mmio) -> None:
    hist = stacks.histogram(mmio.events, "x86_emulate_insn")
    exits = mmio.result.exits
    assert hist[EPT_VIOLATION] == exits.get("EPT_VIOLATION", 0) > 0
    assert hist[EPT_MISCONFIG] == exits.get("EPT_MISCONFIG", 0) > 0


def test_complete_emulated_mmio_path(mmio) -> None:
    mmio_reads = [u for u in mmio.result.userspace if u.reason == "MMIO" and not u.fields["is_write"]]
    assert stacks.histogram(mmio.events, "x86_emulate_insn")[COMPLETE_MMIO] == len(mmio_reads) > 0
    hist = stacks.histogram(mmio.events, "complete_emulated_mmio")
    assert hist == Counter({COMPLETE_MMIO[3:]: len([u for u in mmio.result.userspace if u.reason == "MMIO"])})


def test_histogram_counts_every_call(mmio) -> None:
    for func in stacks.functions(mmio.events):
        hist = stacks.histogram(mmio.events, func)
        assert sum(hist.values()) == sum(ev.kind == "call" and ev.name == func for ev in mmio.events)
        assert all(s[0] == func and s[-1] == "entry_SYSCALL_64_after_hwframe" for s in hist)


def test_cli_prints_bpftrace_shape(capsys, mmio) -> None:
    assert main(["stacks", str(REPO / "scenarios" / "mmio-read-no-decode.yaml"), "--func", "x86_emulate_insn"]) == 0
    out = capsys.readouterr().out
    assert stacks.parse_bpftrace(out) == stacks.histogram(mmio.events, "x86_emulate_insn")
    entries = re.findall(r"^@\[\n((?: {8}\w+\n)+)\]: (\d+)$", out, re.M)
    assert len(entries) == len(stacks.histogram(mmio.events, "x86_emulate_insn"))
    counts = [int(n) for _, n in entries]
    assert counts == sorted(counts)                     # bpftrace prints the largest count last
    assert out.endswith("]: %d\n\n" % counts[-1])


def test_unknown_function_is_bad_input(capsys) -> None:
    assert main(["stacks", str(REPO / "scenarios" / "port-in.yaml"), "--func", "no_such_function"]) == 2
    err = capsys.readouterr().err
    assert "not a modelled kernel function" in err and "x86_emulate_insn" in err


# flamegraph.pl: `my ($stack, $samples) = (/^(.*)\s+?(\d+(?:\.\d*)?)$/)`, frames split on ';';
# speedscope's folded importer: `stack count` per line, the count after the last space.
_FLAMEGRAPH_PL = re.compile(r"^(.*)\s+?(\d+(?:\.\d*)?)$")


def test_folded_grammar(capsys, mmio, tmp_path) -> None:
    svg = tmp_path / "f.svg"
    assert main(["stacks", str(REPO / "scenarios" / "mmio-read-no-decode.yaml"), "--func", "x86_emulate_insn",
                 "--folded", "--svg", str(svg)]) == 0
    out = capsys.readouterr().out
    hist = stacks.histogram(mmio.events, "x86_emulate_insn")
    assert stacks.parse_folded(out) == hist
    total = 0
    for line in out.splitlines():
        m = _FLAMEGRAPH_PL.match(line)
        assert m, line
        frames = m[1].split(";")
        assert all(f and " " not in f and "\t" not in f for f in frames)
        assert frames[0] == "entry_SYSCALL_64_after_hwframe" and frames[-1] == "x86_emulate_insn"
        total += int(m[2])
    assert total == sum(hist.values())
    assert svg.read_text().startswith("<?xml")


def test_flame_graph_svg(mmio) -> None:
    hist = stacks.histogram(mmio.events, "x86_emulate_insn")
    root = ET.fromstring(render_svg(hist).split("\n", 1)[1])
    ns = {"s": "http://www.w3.org/2000/svg"}
    boxes = root.findall("s:g", ns)
    nodes = Counter()
    for stack, n in hist.items():
        path = tuple(reversed(stack))
        for i in range(1, len(path) + 1):
            nodes[path[:i]] += n
    assert len(boxes) == len(nodes)
    total = sum(hist.values())
    widths = {}
    for g in boxes:
        title = g.find("s:title", ns).text
        name, n = re.match(r"^(\S+) \((\d+) samples", title).groups()
        w = float(g.find("s:rect", ns).get("width"))
        widths.setdefault(name, []).append((int(n), w))
    full = float(root.get("width")) - 20
    for name, items in widths.items():
        for n, w in items:
            assert abs(w - full * n / total) < 0.02, name
    assert sorted(n for items in widths.values() for n, _ in items) == sorted(nodes.values())
