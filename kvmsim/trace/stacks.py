"""bpftrace-style stack histograms of any modelled kernel function, folded stacks, a flame graph.

    bpftrace -e 'kprobe:x86_emulate_insn { @[kstack] = count(); }'

prints, for each distinct kernel stack, `@[` then one frame per line (innermost first,
indented 8 spaces as bpftrace's kstack) then `]: COUNT`, entries sorted by count ascending
as bpftrace prints a count map.  Frames come from the simulated kernel stack (probe.py
@kfunc); the stack below KVM_RUN is the fixed ioctl syscall path.  Frames carry no `+off`
(the model has no machine code), and a real kstack may lack a frame the compiler inlined or
tail-called (e.g. kvm_emulate_instruction, handle_exception_nmi → handle_ud).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from kvmsim.probe import Event

# What lies below kvm_arch_vcpu_ioctl_run on a KVM_RUN ioctl (virt/kvm/kvm_main.c, fs/ioctl.c, arch/x86/entry/).
SYSCALL_FRAMES = ("kvm_vcpu_ioctl", "__x64_sys_ioctl", "do_syscall_64", "entry_SYSCALL_64_after_hwframe")
INDENT = " " * 8     # bpftrace's get_stack(..., 8) for map keys

Stack = tuple[str, ...]   # innermost first


def kstack(ev: Event) -> Stack:
    """The kernel stack at a call event, innermost first, as bpftrace's kstack has it."""
    frames = (ev.name, *reversed(ev.stack))
    if frames[-1] == "kvm_arch_vcpu_ioctl_run":
        frames += SYSCALL_FRAMES
    return frames


def histogram(events: Iterable[Event], func: str) -> Counter[Stack]:
    """@[kstack] = count() on `func`: how often each distinct stack reached it."""
    return Counter(kstack(ev) for ev in events if ev.kind == "call" and ev.name == func)


class StackCounter:
    """A probe subscriber that keeps only the histogram (bounded memory for long runs)."""

    def __init__(self, func: str) -> None:
        self.func = func
        self.hist: Counter[Stack] = Counter()

    def __call__(self, ev: Event) -> None:
        if ev.kind == "call" and ev.name == self.func:
            self.hist[kstack(ev)] += 1


def functions(events: Iterable[Event]) -> Counter[str]:
    """Every modelled function the run called, with its call count (what --func can name)."""
    return Counter(ev.name for ev in events if ev.kind == "call")


def _order(hist: Counter[Stack]) -> list[tuple[Stack, int]]:
    """bpftrace's order: by count ascending (the largest last); ties by stack, for stable bytes."""
    return sorted(hist.items(), key=lambda kv: (kv[1], kv[0]))


def format_bpftrace(hist: Counter[Stack], name: str = "@") -> str:
    out = []
    for stack, count in _order(hist):
        out.append(f"{name}[\n" + "".join(f"{INDENT}{f}\n" for f in stack) + f"]: {count}\n")
    return "".join(out) + ("\n" if out else "")


_ENTRY = re.compile(r"^(?P<name>@\w*)\[\n(?P<frames>(?:[ \t]+\S.*\n)*)\]: (?P<count>\d+)$", re.M)


def parse_bpftrace(text: str) -> Counter[Stack]:
    """A bpftrace stack-count map back to {stack: count} (frame `+off` suffixes dropped)."""
    hist: Counter[Stack] = Counter()
    for m in _ENTRY.finditer(text):
        frames = tuple(re.sub(r"\+\d+$", "", line.strip()) for line in m["frames"].splitlines())
        hist[frames] += int(m["count"])
    return hist


def format_folded(hist: Counter[Stack]) -> str:
    """Brendan Gregg's folded format (flamegraph.pl, speedscope): `root;...;leaf count` per line."""
    return "".join(f"{';'.join(reversed(stack))} {count}\n" for stack, count in
                   sorted(hist.items(), key=lambda kv: tuple(reversed(kv[0]))))


_FOLDED = re.compile(r"^(?P<frames>[^;\s][^;]*(?:;[^;]+)*) (?P<count>\d+)$")


def parse_folded(text: str) -> Counter[Stack]:
    hist: Counter[Stack] = Counter()
    for line in text.splitlines():
        m = _FOLDED.match(line)
        if m is None:
            raise ValueError(f"not a folded-stack line: {line!r}")
        hist[tuple(reversed(m["frames"].split(";")))] += int(m["count"])
    return hist
