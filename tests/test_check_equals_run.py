"""One validation path: whatever `run` rejects before the guest starts, `check` rejects too, with
the same `file:line: error:` text and status 2 (never a crash, never "ok" from check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmsim.cli import main
from badinput import assert_bad_input

HEAD = "name: t\ndescription: check == run\nguest: {asm: hlt, mode: long64}\n"
DEVS = "devices:\n  - {type: serial16550}\n  - {type: debug-exit}\n"

# name: (YAML after the head, the line the error names, text the message contains)
CASES = {
    "image-outside-memory": ("memory: [{gpa: 0x400000, size: 0x1000}]\n", 4, "not inside any memory slot"),
    "asm-error": (None, 4, "Error: no such instruction"),
    "memslot-gpa-wraps": ("memory:\n  - {gpa: 0xfffffffffffff000, size: 0x1000}\n", 5,
                          "wraps around 2^64 (EINVAL)"),
    "memslot-gpa-beyond-maxphyaddr": ("memory:\n  - {gpa: 0, size: 2M}\n  - {gpa: 0x400000000000, size: 4K}\n", 6,
                                      "46-bit guest-physical space (kvm_mmu_max_gfn: host MAXPHYADDR) (EINVAL)"),
    "memslot-size-2^48": ("memory:\n  - {gpa: 0, size: 0x1000000000000}\n", 5, "more than a VMM can map"),
    "memslot-size-2^43": ("memory:\n  - {gpa: 0, size: 0x80000000000}\n", 5, "KVM_MEM_MAX_NR_PAGES"),
    "memslot-size-2^63": ("memory:\n  - {gpa: 0, size: 0x8000000000000000}\n", 5, "more than a VMM can map"),
    "memslot-misaligned": ("memory:\n  - {gpa: 0x800, size: 0x200000}\n", 5, "not page aligned (EINVAL)"),
    "memslot-overlap": ("memory:\n  - {gpa: 0, size: 0x200000}\n  - {gpa: 0x1ff000, size: 0x2000}\n", 6,
                        "overlaps slot 0 at 0x0+0x200000 (EEXIST)"),
    "memslot-too-much-ram": ("memory:\n  - {gpa: 0, size: 0x200000}\n  - {gpa: 0x100000000, size: 0x200000000}\n",
                             6, "host memory"),
    "two-devices-one-port": (DEVS + "  - {type: port-value, port: 0xf4, size: 4, value: 1}\n", 7,
                             "overlaps devices[1] 'debug-exit'"),
    "two-devices-one-mmio-range": (DEVS + "  - {type: regbank, gpa: 0xfee00000, name: a}\n"
                                   "  - {type: regbank, gpa: 0xfee00ff0, name: b}\n", 8, "on the mmio bus"),
    "regbank-runs-into-ram": (DEVS + "  - {type: regbank, gpa: 0x1ff800}\n", 7, "inside RAM"),
    "ioeventfd-len0-datamatch": (DEVS + "  - {type: ioeventfd, port: 0x80, len: 0, datamatch: 1}\n", 7,
                                 "KVM_IOEVENTFD: EINVAL"),
    "regbank-too-large": (DEVS + "  - {type: regbank, gpa: 0x80000000, size: 0x8000000000000000}\n", 7,
                          "more than kvmsim keeps"),
    "ioeventfd-collision": (DEVS + "  - {type: ioeventfd, gpa: 0x80000000, len: 4}\n"
                            "  - {type: ioeventfd, gpa: 0x80000000, len: 0, name: b}\n", 8, "EEXIST"),
    "ioeventfd-same-datamatch": (DEVS + "  - {type: ioeventfd, port: 0x80, len: 1, datamatch: 1}\n"
                                 "  - {type: ioeventfd, port: 0x80, len: 1, datamatch: 1, name: b}\n", 8, "EEXIST"),
    "cpuid-table-refuses-boot-state": ("kvm:\n  cpuid:\n    replace: true\n    entries:\n"
                                       "      - {function: 0x80000008, eax: 13}\n", 5,
                                       "long64 boot state is refused under this CPUID table: cr3 0x4000"),
    "cpuid-override-refuses-boot-state": ("kvm:\n  cpuid:\n    - {function: 0x80000008, eax: 12}\n", 5,
                                          "MAXPHYADDR (12)"),
    "event-at-with-host-nmi": ("events:\n  - {at: {userspace_exit: 1}, host: nmi}\n", 5, "'at' goes with inject"),
    "event-every-with-inject": ("events:\n  - {every: {guest_insns: 10}, inject: nmi}\n", 5,
                                "'every' goes with host: nmi"),
}


def _write(tmp_path: Path, case: str) -> Path:
    body = CASES[case][0]
    f = tmp_path / f"{case}.yaml"
    if body is None:
        f.write_text("name: t\ndescription: check == run\nguest:\n  asm: movx %al, %bl\n  mode: long64\n")
    else:
        f.write_text(HEAD + body)
    return f


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_check_rejects_what_run_rejects(case: str, command: str, tmp_path: Path, capsys) -> None:
    _, line, fragment = CASES[case]
    assert_bad_input(command, _write(tmp_path, case), None, line, fragment, capsys)


def test_check_and_run_give_the_same_message(tmp_path: Path, capsys) -> None:
    for case in sorted(CASES):
        f = _write(tmp_path, case)
        main(["check", str(f)])
        from_check = capsys.readouterr().err
        main(["run", str(f)])
        assert capsys.readouterr().err == from_check, case


def test_check_still_accepts_the_shipped_scenarios(capsys) -> None:
    root = Path(__file__).resolve().parents[1] / "scenarios"
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(list(root.glob("*.yaml"))) and all(ln.startswith("ok: ") for ln in out)


def test_ioeventfds_that_kvm_accepts_still_run(tmp_path: Path, capsys) -> None:
    """Different datamatch values or lengths, or the same address on the other bus, are no collision."""
    f = tmp_path / "ok.yaml"
    f.write_text(HEAD + DEVS + "  - {type: ioeventfd, port: 0x80, len: 1, datamatch: 1}\n"
                 "  - {type: ioeventfd, port: 0x80, len: 1, datamatch: 2, name: b}\n"
                 "  - {type: ioeventfd, gpa: 0x80000080, len: 1, name: c}\n"
                 "  - {type: ioeventfd, gpa: 0x80000080, len: 2, name: d}\n")
    assert main(["check", str(f)]) == 0
    assert capsys.readouterr().out == "ok: t\n"
    assert main(["run", str(f)]) == 0  # the sim registers all four, as /dev/kvm does
