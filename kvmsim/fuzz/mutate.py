"""Seeded mutations of scenario files: the inputs of `make fuzz-scenarios` (fuzz/scenarios.py).

`mutant(seed, index)` is a pure function of its arguments: the same seed and index give the same
bytes on every machine (random.Random seeded with a string; the base files are the shipped
scenarios/*.yaml, sorted).  Each operator in OPS turns one base file into hostile or merely wrong
input; structural ones edit the parsed YAML and dump it again, textual ones edit the bytes (alias
bombs, nesting, NUL bytes, non-UTF-8, huge files, truncation, YAML tricks).
"""

from __future__ import annotations

import copy
import functools
import random
from pathlib import Path
from typing import Any, Callable

import yaml

from kvmsim.hw.apicdef import APIC_BASE_RESET, APIC_DEFAULT_PHYS_BASE
from kvmsim.scenario.schema import REPO_ROOT

SCENARIO_DIR = REPO_ROOT / "scenarios"
Path_ = tuple[Any, ...]

# Numbers at the edges of every integer type and of float: 0, -1, 2^k +- 1, 2^64, huge, inf, nan.
BOUNDARY: list[Any] = [0, -1, 1, 0x1000, 0xFFF, 0x1001, 7, 255, 256, 0xFFFF, 0x10000, 0x7FFF_FFFF, 0x8000_0000,
                       0xFFFF_FFFF, 0x1_0000_0000, 0x1_0000_0001, 1 << 46, 1 << 47, 1 << 48, 1 << 51, 1 << 52,
                       (1 << 52) - 0x1000, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_F000,
                       0xFFFF_FFFF_FFFF_FFFF, 1 << 64, (1 << 64) + 1, -(1 << 63), 10 ** 30, 10 ** 300,
                       float("inf"), float("-inf"), float("nan"), 0.5, 1e308, -0.0, 1e-300]
STRINGS: list[Any] = ["", " ", "0x", "0x1000", "4K", "2M", "1G", "16T", "-1", "1_000", "0b101", "1e3", "abc",
                      "nan", "inf", "0xffffffffffffffffff", "9" * 40, "\u00e9", "\u202e", "a" * 300, "null",
                      "~", "yes", "no", "on", "EXIT_REASON_HLT", "debug-exit"]


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[tuple[str, str], ...]:
    """(file name, text) of every shipped scenario, sorted by name."""
    return tuple((p.name, p.read_text()) for p in sorted(SCENARIO_DIR.glob("*.yaml")))


# ---------------------------------------------------------------- parsed-YAML helpers

def _paths(node: Any, at: Path_ = ()) -> list[Path_]:
    out: list[Path_] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(at + (k,))
            out += _paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(at + (i,))
            out += _paths(v, at + (i,))
    return out


def _get(data: Any, path: Path_) -> Any:
    for c in path:
        data = data[c]
    return data


def _set(data: Any, path: Path_, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def _leaves(data: Any, want: Callable[[Any], bool]) -> list[Path_]:
    return [p for p in _paths(data) if want(_get(data, p))]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
    style = "|" if "\n" in s else None   # PyYAML falls back to quoting where a block cannot hold it
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> bytes:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120).encode("utf-8", "surrogatepass")


def _any_value(rng: random.Random) -> Any:
    return rng.choice([rng.choice(BOUNDARY), rng.choice(STRINGS), None, True, False, [], {},
                       [rng.choice(BOUNDARY)], {"x": rng.choice(BOUNDARY)}, {"gpa": 0, "size": 0}])


# ---------------------------------------------------------------- structural operators (on the data)

def op_delete(rng: random.Random, data: Any) -> None:
    p = rng.choice(_paths(data))
    del _get(data, p[:-1])[p[-1]]


def op_duplicate_item(rng: random.Random, data: Any) -> None:
    lists = _leaves(data, lambda v: isinstance(v, list) and v) or [()]
    p = rng.choice(lists)
    lst = _get(data, p) if p else None
    if isinstance(lst, list) and lst:
        lst.insert(rng.randrange(len(lst) + 1), copy.deepcopy(rng.choice(lst)))
    else:
        data.setdefault("memory", []).append({"gpa": 0, "size": 0x1000})


def op_retype(rng: random.Random, data: Any) -> None:
    _set(data, rng.choice(_paths(data)), _any_value(rng))


def op_boundary(rng: random.Random, data: Any) -> None:
    nums = _leaves(data, _is_num)
    p = rng.choice(nums or _paths(data))
    _set(data, p, rng.choice(BOUNDARY))


def op_number_string(rng: random.Random, data: Any) -> None:
    nums = _leaves(data, _is_num)
    strs = _leaves(data, lambda v: isinstance(v, str))
    if nums and (not strs or rng.random() < 0.6):
        p = rng.choice(nums)
        v = _get(data, p)
        forms = [str(v), hex(int(v)) if isinstance(v, int) else str(v), f" {v} ", f"{v}K", f"{v}_", "0x" + "f" * 17,
                 rng.choice(STRINGS)]
        _set(data, p, rng.choice(forms))
    elif strs:
        _set(data, rng.choice(strs), rng.choice(BOUNDARY))


def op_unknown_field(rng: random.Random, data: Any) -> None:
    maps = [()] + _leaves(data, lambda v: isinstance(v, dict))
    m = _get(data, rng.choice(maps))
    m[rng.choice(["devcies", "x", "memroy", "Name", "type", "gpa", "0", "limits", "expect", "\u00e9t\u00e9"])] = \
        _any_value(rng)


def op_swap_sections(rng: random.Random, data: Any) -> None:
    keys = list(data)
    names = ["name", "description", "guest", "memory", "devices", "kvm", "userspace", "events", "limits",
             "expect", "backends", "host_dependent", "known_failure"]
    a, b = rng.choice(keys), rng.choice(names)
    va, vb = data.get(a), data.get(b)
    data[a], data[b] = vb, va


def op_memslots(rng: random.Random, data: Any) -> None:
    mem = data.setdefault("memory", [{"gpa": 0, "size": 2 << 20}])
    if not isinstance(mem, list):
        data["memory"] = mem = [{"gpa": 0, "size": 2 << 20}]
    base = rng.choice(mem) if mem and isinstance(mem[0], dict) else {"gpa": 0, "size": 0x200000}
    g, s = base.get("gpa", 0), base.get("size", 0x1000)
    g = g if isinstance(g, int) else 0
    s = s if isinstance(s, int) else 0x1000
    pick = rng.randrange(7)
    if pick == 0:    # overlapping slot
        mem.append({"gpa": g + rng.choice([0, 0x1000, max(0, s - 0x1000)]), "size": rng.choice([0x1000, s, 2 * s])})
    elif pick == 1:  # boundary gpa / size
        mem.append({"gpa": rng.choice(BOUNDARY), "size": rng.choice(BOUNDARY)})
    elif pick == 2:  # aligned slot high in the address space
        k = rng.choice([32, 40, 45, 46, 47, 48, 51, 52, 56, 63])
        mem.append({"gpa": (1 << k) - rng.choice([0, 0x1000, 0x2000]), "size": rng.choice([0x1000, 0x2000, 1 << 20])})
    elif pick == 3:  # size at KVM's page-count limit
        mem[:] = [{"gpa": 0, "size": rng.choice([((1 << 31) - 1) << 12, (1 << 31) << 12, 4 << 30, (4 << 30) + 0x1000,
                                                  0x1000000000000, 0x8000000000000000])}]
    elif pick == 4:  # many slots
        mem.extend({"gpa": 0x10000000 + i * 0x1000, "size": 0x1000} for i in range(rng.choice([10, 500, 40000])))
    elif pick == 5:
        mem[:] = []
    else:            # read-only image slot
        for m in mem:
            if isinstance(m, dict):
                m["readonly"] = rng.choice([True, "yes", 1, None])


DEVICE_TYPES = ["serial16550", "debug-exit", "regbank", "test-report", "port-value", "ioeventfd", "coalesced-mmio",
                "bogus"]


def op_devices(rng: random.Random, data: Any) -> None:
    devs = data.get("devices")
    if not isinstance(devs, list):
        devs = data["devices"] = [{"type": "serial16550", "port": 0x3F8}, {"type": "debug-exit", "port": 0xF4}]
    t = rng.choice(DEVICE_TYPES)
    other = rng.choice(devs) if devs and isinstance(devs[0], dict) else {}
    d: dict[str, Any] = {"type": t}
    port = other.get("port", rng.choice([0xF4, 0x3F8, 0, 0xFFFF, 0xFFFE, 0x10000]))
    gpa = other.get("gpa", rng.choice([0, 0x1000, 0xD0000000, 0xFFFFFFFFFFFFF000, 0xFFFFFFFFFFFFFFFF, 1 << 52]))
    if t in ("regbank", "coalesced-mmio"):
        d.update(gpa=gpa, size=rng.choice([0x1000, 1, 0, 1 << 20, (1 << 20) + 1, 1 << 40, 0xFFFFFFFFFFFFFFFF]))
        if t == "regbank" and rng.random() < 0.5:
            d["values"] = {rng.choice(BOUNDARY): rng.choice(BOUNDARY)}
    elif t == "ioeventfd":
        d.update({"len": rng.choice([0, 1, 2, 3, 4, 8, 16]), rng.choice(["gpa", "port"]): rng.choice([gpa, port])})
        if rng.random() < 0.5:
            d["datamatch"] = rng.choice(BOUNDARY)
    elif t == "port-value":
        d.update(port=port, size=rng.choice([1, 2, 4, 8, 0]), value=rng.choice(BOUNDARY))
    elif t == "debug-exit":
        d.update(port=port, size=rng.choice([1, 2, 4, 3]))
    else:
        d["port"] = port
    if rng.random() < 0.3:
        d["name"] = rng.choice([other.get("name", "serial16550"), "debug-exit", "", "x" * 200])
    devs.insert(rng.randrange(len(devs) + 1), d)


def op_image_outside(rng: random.Random, data: Any) -> None:
    pick = rng.randrange(4)
    if pick == 0:
        data["memory"] = [{"gpa": rng.choice([0x200000, 0x100000000, 0x2000]), "size": 0x1000}]
    elif pick == 1:
        data["memory"] = [{"gpa": 0, "size": rng.choice([0x1000, 0x2000, 0x100000, 0x101000])}]
    elif pick == 2:
        data["memory"] = [{"gpa": 0, "size": 0x1000}, {"gpa": 0x100000, "size": 0x1000}]
    else:
        g = data.get("guest")
        if isinstance(g, dict):
            g["mode"] = rng.choice(["real16", "prot32", "long64", "reset", "long32", 64, None])


BROKEN_ASM = [
    "    this_is_not_an_instruction %rax", "    jmp undefined_symbol_xyz", "    .org 0x10000000, 0",
    "    .fill 0x10000000, 1, 0", "    .skip 0x7fffffffff", "    .incbin \"/dev/zero\"", "    .include \"/dev/zero\"",
    "    .include \"no/such/file.inc\"", "    .rept 100000000\n    nop\n    .endr", "    .err", "    .error \"boom\"",
    "    .section .data\n    .long 1", "    .macro m\n    m\n    .endm\n    m", "    .byte 256, -300",
    "    .code16\n    movl $1, %eax", "    .align 1 << 30", "    .globl _start\n_start:", "    .end",
    "    mov $1, %eax \x00", "    .ascii \"\\777\"", "    .quad 0xffffffffffffffffff", "    .space -1",
    "    .set _start, 0xffffffffffffffff", "    .org 0", "    .print \"" + "x" * 5000 + "\"",
]


def op_broken_asm(rng: random.Random, data: Any) -> None:
    g = data.get("guest")
    if not isinstance(g, dict):
        data["guest"] = g = {"mode": "long64"}
    text = g.get("asm")
    if not isinstance(text, str):
        src = g.pop("source", None)
        path = REPO_ROOT / str(src) if src is not None else None
        try:
            text = path.read_text() if path is not None and path.is_file() else ".globl _start\n_start:\n    hlt\n"
        except (OSError, UnicodeDecodeError):
            text = ".globl _start\n_start:\n    hlt\n"
    lines = text.splitlines()
    for _ in range(rng.choice([1, 1, 2])):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(BROKEN_ASM))
    g["asm"] = "\n".join(lines) + "\n"
    g.pop("source", None)


def op_guest(rng: random.Random, data: Any) -> None:
    g = data.get("guest")
    if not isinstance(g, dict):
        data["guest"] = g = {"mode": "long64", "source": "guests/halt.S"}
    pick = rng.randrange(5)
    if pick == 0:
        g["source"] = rng.choice(["guests/none.S", "guests", "/dev/zero", "/etc/hostname", "", "../scenarios/halt.yaml",
                                  "guests/lib/kvmsim.inc", "/proc/self/mem"])
    elif pick == 1:
        g["defsym"] = {rng.choice(["X", "PIO_LOOP_COUNT", "CPUID_LEAF", "1bad", "a b", "_start"]): rng.choice(BOUNDARY)}
    elif pick == 2:
        g["asm"] = rng.choice(["", "hlt", "\x00", ".globl _start\n_start: hlt\n"])
    elif pick == 3:
        g["mode"] = rng.choice(["real16", "prot32", "long64", "reset", "REAL16", "", None, 16])
    else:
        g.pop(rng.choice(["mode", "source", "asm"]), None)


def op_events(rng: random.Random, data: Any) -> None:
    def one() -> Any:
        e: dict[str, Any] = {}
        if rng.random() < 0.6:
            e["at"] = {rng.choice(["exit", "userspace_exit", "bogus"]): rng.choice(BOUNDARY)}
        if rng.random() < 0.5:
            e["every"] = {"guest_insns": rng.choice(BOUNDARY)}
        if rng.random() < 0.6:
            e["inject"] = rng.choice(["nmi", {"irq": rng.choice(BOUNDARY)}, "irq", {"nmi": 1}, 3])
        if rng.random() < 0.4:
            e["host"] = rng.choice(["nmi", "smi", None])
        return e if rng.random() < 0.9 else rng.choice(BOUNDARY)
    data["events"] = [one() for _ in range(rng.choice([1, 1, 2, 5]))]


def op_limits(rng: random.Random, data: Any) -> None:
    keys = ["max_exits", "max_guest_insns", "wall_seconds", "max_vm_exits"]
    data["limits"] = {rng.choice(keys): rng.choice(BOUNDARY + STRINGS + [None]) for _ in range(rng.choice([1, 2, 3]))}


def op_expect(rng: random.Random, data: Any) -> None:
    e = data.get("expect")
    if not isinstance(e, dict):
        data["expect"] = e = {}
    key = rng.choice(["stop", "exits", "userspace", "emulation", "serial", "regs", "memory", "devices", "exceptions",
                      "userspace_mode"])
    e[key] = rng.choice([
        {"reason": rng.choice(["hlt", "debug-exit", "nope", 3]), "code": rng.choice(BOUNDARY)},
        {rng.choice(["HLT", "IO_INSTRUCTION", "NOPE", "EXIT_REASON_HLT"]): rng.choice(BOUNDARY)},
        [{"io": {"port": rng.choice(BOUNDARY), "data": rng.choice(STRINGS)}}, "hlt", "bogus"],
        {rng.choice(["PF", "NO_DECODE|PF", "0x1000", "BAD"]): rng.choice(BOUNDARY)},
        {"rax": rng.choice(BOUNDARY), "xmm0": 1}, [{"gpa": rng.choice(BOUNDARY), "bytes": rng.choice(STRINGS)}],
        {"nosuch": {"reads": 1}}, [{"vector": rng.choice(BOUNDARY)}], rng.choice(STRINGS), rng.choice(BOUNDARY)])


def op_kvm(rng: random.Random, data: Any) -> None:
    k = data.get("kvm")
    if not isinstance(k, dict):
        data["kvm"] = k = {}
    key = rng.choice(["cpuid", "msrs", "emulator", "user_space_msr", "enable_ept", "unrestricted_guest",
                      "mmio_caching", "force_emulation_prefix"])
    k[key] = rng.choice([
        [{"function": rng.choice(BOUNDARY), "index": rng.choice(BOUNDARY), "eax": rng.choice(BOUNDARY)}],
        {rng.choice(BOUNDARY): rng.choice(BOUNDARY)}, {"version": rng.choice(["6.10", "99.99", "6", 6.1, "x"])},
        ["unknown", "inval", "filter", "bogus"], rng.choice([True, False, "yes", 2, None])])


_TOP = 0xFFFF_FFFF_FFFF_F000


def op_valid_edges(rng: random.Random, data: Any) -> None:
    """Settings the schema accepts, at the edges of what they allow: these files reach `run`."""
    pick = rng.randrange(7)
    n = f"edge{rng.randrange(1000)}"
    if pick == 0:
        k = data.get("kvm") if isinstance(data.get("kvm"), dict) else data.setdefault("kvm", {})
        k[rng.choice(["enable_ept", "unrestricted_guest", "mmio_caching", "force_emulation_prefix",
                      "enable_vmware_backdoor", "host_is_hypervisor", "exit_on_emulation_failure"])] = rng.random() < 0.5
    elif pick == 1:
        devs = data.get("devices") if isinstance(data.get("devices"), list) else data.setdefault("devices", [])
        devs.append(rng.choice([
            {"type": "port-value", "port": 0xFFFF, "size": 1, "value": 0xFF, "name": n},
            {"type": "port-value", "port": 0xFFFC, "size": 4, "value": 0xFFFFFFFF, "name": n},
            {"type": "port-value", "port": 0xFFFE, "size": 4, "value": 1, "name": n},
            {"type": "regbank", "gpa": _TOP, "size": 0x1000, "width": 8, "values": {0xFF8: (1 << 64) - 1}, "name": n},
            {"type": "regbank", "gpa": (1 << 52) - 0x1000, "name": n},
            {"type": "regbank", "gpa": APIC_DEFAULT_PHYS_BASE, "size": 1, "width": 1, "name": n},
            {"type": "coalesced-mmio", "gpa": _TOP, "size": 0x1000, "name": n},
            {"type": "ioeventfd", "port": 0xFFFF, "len": 1, "name": n},
            {"type": "ioeventfd", "gpa": 0xFFFF_FFFF_FFFF_FFF8, "len": 8, "datamatch": (1 << 64) - 1, "name": n},
            {"type": "ioeventfd", "port": 0xF4, "len": 4, "name": n},
            {"type": "test-report", "port": 0xFFFC, "name": n},
            {"type": "serial16550", "port": 0xFFF8, "name": n}]))
    elif pick == 2:
        mem = data.get("memory") if isinstance(data.get("memory"), list) else data.setdefault(
            "memory", [{"gpa": 0, "size": 2 << 20}])
        mem.append(rng.choice([{"gpa": (1 << 46) - 0x1000, "size": 0x1000}, {"gpa": 0xFFFF0000, "size": 0x10000,
                                                                           "readonly": True},
                               {"gpa": 0x100000000, "size": 0x1000, "readonly": True},
                               {"gpa": 0xC0000000, "size": 0x1000}]))
    elif pick == 3:
        data["events"] = [rng.choice([
            {"at": {"exit": rng.choice([0, 1, 2, 10**12])}, "inject": "nmi"},
            {"at": {"userspace_exit": rng.choice([0, 1, 5])}, "inject": {"irq": rng.choice([0, 2, 8, 32, 255])}},
            {"every": {"guest_insns": rng.choice([1, 2, 7, 1000])}, "host": "nmi"}]) for _ in range(rng.choice([1, 2]))]
    elif pick == 4:
        data["userspace"] = {"unclaimed_io": rng.choice(["ignore", "log", "stop"]),
                             "unclaimed_mmio": rng.choice(["ignore", "log", "stop"]),
                             "msr": {rng.choice([0, 0x10, 0xC0000080, 0xFFFFFFFF]): rng.choice([0, (1 << 64) - 1])}}
    elif pick == 5:
        k = data.get("kvm") if isinstance(data.get("kvm"), dict) else data.setdefault("kvm", {})
        k["cpuid"] = [rng.choice([{"function": 0x80000008, "eax": rng.choice([0x3034, 0x3020, 0x3000, 0])},
                                  {"function": 0, "eax": rng.choice([0, 1, 0xFFFFFFFF])},
                                  {"function": 1, "ecx": 0, "edx": 0},
                                  {"function": 0xD, "index": rng.choice([0, 1, 63, 0xFFFFFFFF]), "eax": 0xFFFFFFFF},
                                  {"function": 0xFFFFFFFF, "eax": 1}])]
        if rng.random() < 0.5:
            k["msrs"] = {rng.choice([0x10, 0x1B, 0xC0000080, 0x3A, 0xFFFFFFFF]): rng.choice([0, 1, (1 << 64) - 1])}
        if rng.random() < 0.3:
            k["user_space_msr"] = rng.sample(["unknown", "inval", "filter"], rng.randrange(1, 4))
    else:
        k = data.get("kvm") if isinstance(data.get("kvm"), dict) else data.setdefault("kvm", {})
        k["emulator"] = {"version": rng.choice(["5.10", "6.1", "6.6", "6.18", "0.0", "99.99"]),
                         "vex_moves": rng.random() < 0.5}


_REGS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r15", "rip", "rflags"]
_SEGS = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"]
_CRS = {"cr0": [0, 1, 0x31, 0x60000010, 0x80000001, 0x80050033, 0xE0000011, 1 << 32],
        "cr3": [0, 0x4000, 0x4FFF, 1 << 46, 1 << 52, 1 << 63],
        "cr4": [0, 0x20, 0x620, 0x1000, 1 << 20, 1 << 23, 0x3FFFFF, 1 << 32],
        "efer": [0, 0x100, 0x400, 0x500, 0xD01, 1 << 12, 1 << 63],
        "apic_base": [0, APIC_BASE_RESET, 0xFEE00D00, 0xFEE00500, 1 << 52]}


def op_new_formats(rng: random.Random, data: Any) -> None:
    """The newer scenario fields (vcpu regs/sregs, guest.load/entry, vmm.on_hlt, paging.user, sequence
    devices, a replacing CPUID table), with values at and beyond their edges."""
    pick = rng.randrange(9)
    vcpu = data.get("vcpu") if isinstance(data.get("vcpu"), dict) else data.setdefault("vcpu", {})
    n = f"seq{rng.randrange(1000)}"
    if pick == 0:
        regs = vcpu.setdefault("regs", {}) if isinstance(vcpu.get("regs", {}), dict) else {}
        for _ in range(rng.choice([1, 2, 3])):
            regs[rng.choice(_REGS)] = rng.choice(BOUNDARY[:30] + [0x2, 0x202, 0x3002, 0x7C00, 0x100000])
        vcpu["regs"] = regs
    elif pick == 1:
        sregs = vcpu.setdefault("sregs", {}) if isinstance(vcpu.get("sregs", {}), dict) else {}
        cr = rng.choice(list(_CRS))
        sregs[cr] = rng.choice(_CRS[cr] + [rng.choice(BOUNDARY)])
        vcpu["sregs"] = sregs
    elif pick == 2:
        sregs = vcpu.setdefault("sregs", {}) if isinstance(vcpu.get("sregs", {}), dict) else {}
        sregs[rng.choice(_SEGS)] = {k: rng.choice(v) for k, v in {
            "selector": [0, 8, 0x10, 0x18, 0x20, 0xFFFF, 0x10000], "base": [0, 0xFFFF0000, 1 << 32, 1 << 63],
            "limit": [0, 0xFFFF, 0xFFFFFFFF, 1 << 32], "type": [0, 3, 0xB, 0xF, 16], "present": [0, 1, 2],
            "dpl": [0, 3, 4], "db": [0, 1], "s": [0, 1], "l": [0, 1], "g": [0, 1], "avl": [0, 1]}.items()
            if rng.random() < 0.5}
        vcpu["sregs"] = sregs
    elif pick == 3:
        sregs = vcpu.setdefault("sregs", {}) if isinstance(vcpu.get("sregs", {}), dict) else {}
        sregs[rng.choice(["gdt", "idt"])] = {"base": rng.choice([0, 0x2000, 0xFFFFF000, 1 << 47, 1 << 63, 1 << 64]),
                                             "limit": rng.choice([0, 0x2F, 0xFFF, 0xFFFF, 0x10000])}
        vcpu["sregs"] = sregs
    elif pick == 4:
        g = data.get("guest")
        if isinstance(g, dict):
            if rng.random() < 0.6:
                g["load"] = rng.choice([0, 0x1000, 0x2000, 0x7000, 0x10000, 0xFFFF0, 0x1FF000, 0xFFFFF000,
                                        1 << 32, 1 << 40, 0xFFFFFFFFFFFFF000, -1])
            else:
                g["entry"] = rng.choice(["_start", "nosuch", "", "1bad", 0, 0xFFF0, 0x100000, 1 << 63, -1])
    elif pick == 5:
        data["vmm"] = {"on_hlt": rng.choice(["stop", "resume", "resume", "halt", None])}
    elif pick == 6:
        data["paging"] = {"user": [{"addr": rng.choice([0, 0x100000, 0x200000, 0xFFE00000, 0xFFFFFFFF, 1 << 32,
                                                        1 << 47, (1 << 64) - 0x1000, "4M"]),
                                    "size": rng.choice([1, 0x1000, 0x200000, 1 << 32, 1 << 40, "2M"])}
                                   for _ in range(rng.choice([1, 2]))]}
    elif pick == 7:
        devs = data.get("devices") if isinstance(data.get("devices"), list) else data.setdefault("devices", [])
        size = rng.choice([1, 2, 4, 8])
        values = [rng.choice([0, 1, (1 << (8 * size)) - 1, 1 << (8 * size), (1 << 64) - 1])
                  for _ in range(rng.choice([1, 3, 4096, 4097]))]
        d = {"type": "port-sequence", "port": rng.choice([0x60, 0x64, 0xF4, 0xFFFF]), "size": size}
        if rng.random() < 0.5:
            d = {"type": "mmio-sequence", "gpa": rng.choice([0xD0000000, 0xFFFFFFFFFFFFFFF8, 0x1000]), "size": size}
        d.update(values=values, after=rng.choice(["hold", "repeat", "stop"]), name=n)
        devs.append(d)
    else:
        k = data.get("kvm") if isinstance(data.get("kvm"), dict) else data.setdefault("kvm", {})
        entries = [{"function": rng.choice([0, 1, 7, 0xD, 0x80000000, 0x80000008, 0x40000000]),
                    "index": rng.choice([0, 1]), "eax": rng.choice([0, 0xD, 0x80000008, 0xFFFFFFFF])}
                   for _ in range(rng.choice([0, 1, 3, 257]))]
        if entries and rng.random() < 0.1:
            entries[0]["flags"] = 1   # not a field: the flag is set by leaf
        k["cpuid"] = {"replace": rng.choice([True, False]), "entries": entries}


# ---------------------------------------------------------------- textual operators (on the bytes)

def op_alias_bomb(rng: random.Random, text: bytes) -> bytes:
    levels, fan = rng.choice([(3, 5), (5, 10), (8, 10), (9, 9), (20, 2), (40, 2)])
    lines = ["x-bomb:", f"  - &a0 [{', '.join(['lol'] * fan)}]"]
    for i in range(1, levels):
        lines.append(f"  - &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]")
    where = rng.choice(["top", "description"])
    bomb = "\n".join(lines).encode() + b"\n"
    if where == "top":
        return text + b"\n" + bomb
    return bomb + text.replace(b"\ndescription:", b"\ndescription: *a%d\nx-desc:" % (levels - 1), 1)


def op_deep_nesting(rng: random.Random, text: bytes) -> bytes:
    depth = rng.choice([30, 62, 63, 64, 65, 100, 500, 1000, 10000, 100000])
    style = rng.randrange(3)
    if style == 0:
        value = "[" * depth + "]" * depth
    elif style == 1:
        value = "{a: " * depth + "1" + "}" * depth
    else:
        value = "\n" + "".join("  " * i + "- \n" for i in range(min(depth, 2000)))
    key = rng.choice(["x-deep", "events", "expect", "memory"])
    return text + f"\n{key}: {value}\n".encode()


def op_nul(rng: random.Random, text: bytes) -> bytes:
    i = rng.randrange(len(text) + 1)
    return text[:i] + rng.choice([b"\x00", b"\x00" * 8, b"\x01", b"\x1b[2J", b"\x7f", b"\x0b"]) + text[i:]


def op_non_utf8(rng: random.Random, text: bytes) -> bytes:
    bad = rng.choice([b"\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xe9t\xe9", b"\xf8\x88\x80\x80\x80",
                      b"\xff\xfe", b"\xfe\xff"])
    if rng.random() < 0.2:
        return bad + text
    if rng.random() < 0.2:   # the whole file as UTF-16
        return text.decode("utf-8").encode(rng.choice(["utf-16", "utf-32", "latin-1"]), "replace")
    i = rng.randrange(len(text) + 1)
    return text[:i] + bad + text[i:]


def op_huge(rng: random.Random, text: bytes) -> bytes:
    pick = rng.randrange(5)
    if pick == 0:   # just over the size bound
        return text + b"\n# " + b"x" * (1 << 20) + b"\n"
    if pick == 1:   # a long string just under it
        return text.replace(b"\ndescription:", b"\nx-long: " + b"a" * ((1 << 20) - len(text) - 100) + b"\ndescription:", 1)
    if pick == 2:   # many nodes, no alias
        n = rng.choice([50_000, 99_990, 100_001, 300_000])
        return text + b"\nx-many: [" + b",".join([b"0"] * n) + b"]\n"
    if pick == 3:   # many events (each validated)
        n = rng.choice([10_000, 30_000])
        return text + b"\nevents:\n" + b"".join(b"- {at: {exit: %d}, inject: nmi}\n" % i for i in range(n))
    return text + b"\nx-long-line: " + b"9" * rng.choice([4300, 100_000, 900_000]) + b"\n"   # an integer literal


TRICKS = [b"--- !!python/object/apply:os.system ['true']\n", b"x: !!python/name:os.system\n",
          b"x: !!binary AAAA\n", b"---\nname: second\n", b"? [a, b]\n: 1\n", b"? {a: 1}\n: 1\n",
          b"<<: {name: merged}\n", b"x: &anchor\n  <<: *anchor\n", b"x: *undefined_alias\n", b"\t\tname: tab\n",
          b"%YAML 1.2\n---\n", b"%TAG ! tag:example.com,2000:\n---\n", b"x: !custom 1\n", b"...\n", b"- item\n",
          b"x: 0o17\nx2: 0b101\nx3: 1:20\nx4: 2001-12-14\n", b"name: [unclosed\n", b"x: 'unterminated\n",
          b"x: \"\\x00\"\n", b"x: \"\\ud800\"\n", b"\xef\xbb\xbf", b"\r\n", b"\r", b"x: 1e99999\n", b"x: .NaN\n",
          b"x: -.inf\n", b"\x85x: 1\n", b"\xe2\x80\xa8x: 1\n"]


def op_yaml_tricks(rng: random.Random, text: bytes) -> bytes:
    t = rng.choice(TRICKS)
    pick = rng.randrange(3)
    if pick == 0:
        return t + text
    if pick == 1:
        return text + (b"\n" if not text.endswith(b"\n") else b"") + t
    lines = text.split(b"\n")
    lines.insert(rng.randrange(len(lines) + 1), t.rstrip(b"\n"))
    return b"\n".join(lines)


def op_truncate(rng: random.Random, text: bytes) -> bytes:
    return text[:rng.randrange(len(text) + 1)] if rng.random() < 0.9 else b""


def op_duplicate_key(rng: random.Random, text: bytes) -> bytes:
    lines = text.split(b"\n")
    keyed = [i for i, ln in enumerate(lines) if b":" in ln and not ln.lstrip().startswith(b"#")]
    i = rng.choice(keyed) if keyed else 0
    lines.insert(i + 1, lines[i])
    return b"\n".join(lines)


STRUCTURAL: dict[str, Callable[[random.Random, Any], None]] = {
    "delete": op_delete, "duplicate-item": op_duplicate_item, "retype": op_retype, "boundary": op_boundary,
    "number-string": op_number_string, "unknown-field": op_unknown_field, "swap-sections": op_swap_sections,
    "memslots": op_memslots, "devices": op_devices, "image-outside": op_image_outside, "broken-asm": op_broken_asm,
    "guest": op_guest, "events": op_events, "limits": op_limits, "expect": op_expect, "kvm": op_kvm,
    "valid-edges": op_valid_edges, "new-formats": op_new_formats,
}
TEXTUAL: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "alias-bomb": op_alias_bomb, "deep-nesting": op_deep_nesting, "nul-control": op_nul, "non-utf8": op_non_utf8,
    "huge": op_huge, "yaml-tricks": op_yaml_tricks, "truncate": op_truncate, "duplicate-key": op_duplicate_key,
}
# How often each is drawn (structural ones carry most of the semantic checks).
WEIGHTS: dict[str, int] = {**{k: 6 for k in STRUCTURAL}, "memslots": 10, "devices": 10, "boundary": 10,
                           "valid-edges": 14, "new-formats": 14,
                           "broken-asm": 8, **{k: 3 for k in TEXTUAL}, "huge": 2}
OPS = tuple(WEIGHTS)


def mutant(seed: int, index: int) -> tuple[str, str, bytes]:
    """(base file name, operator names joined by '+', the mutated file's bytes) for this seed and index."""
    rng = random.Random(f"kvmsim-fuzz-scenarios:{seed}:{index}")
    name, text = rng.choice(corpus())
    ops = [rng.choices(OPS, weights=[WEIGHTS[o] for o in OPS])[0]]
    if ops[0] in STRUCTURAL and rng.random() < 0.25:   # sometimes a second structural edit on top
        ops.append(rng.choice(list(STRUCTURAL)))
    if ops[0] in TEXTUAL:
        return name, ops[0], TEXTUAL[ops[0]](rng, text.encode())
    data = yaml.safe_load(text)
    for op in ops:
        try:
            STRUCTURAL[op](rng, data)
        except (IndexError, KeyError, TypeError, AttributeError, ValueError):
            pass   # the operator did not fit this file's shape: the file stays as the earlier ones left it
    return name, "+".join(ops), dump(data)


def prepare_dir(directory: Path) -> None:
    """Beside the mutants, what the shipped scenarios find beside themselves: their Python device
    modules (scenarios/*.py, links), so a mutant of a `type: python` scenario still loads its class."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for src in SCENARIO_DIR.glob("*.py"):
        link = directory / src.name
        if not link.exists():
            try:
                link.symlink_to(src)
            except FileExistsError:
                pass   # another worker made it first


def write_mutant(seed: int, index: int, directory: Path) -> tuple[str, str, Path]:
    """mutant() written to DIRECTORY/s{seed}-{index:05d}.yaml (guest sources resolve via the repo root)."""
    name, ops, body = mutant(seed, index)
    path = Path(directory) / f"s{seed}-{index:05d}.yaml"
    path.write_bytes(body)
    return name, ops, path
