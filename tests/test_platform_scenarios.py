"""The platform devices in scenario files: bad fields are `file:line` errors (status 2) from `check`
and `run` alike; good ones build the machine kvm-unit-tests expects (fw-cfg's RAM size from the
memslots, ACPI tables in RAM, isa-debug-exit's QEMU status as the stop code and as a normal stop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from badinput import assert_bad_input
from kvmsim.cli import main
from kvmsim.scenario.expect import check_normal_stop
from kvmsim.scenario.loader import load_scenario
from kvmsim.scenario.runner import make_machine, run_scenario

HEAD = "name: t\ndescription: platform\nguest: {asm: hlt, mode: long64}\ndevices:\n  - {type: serial16550}\n"

# name: (YAML after HEAD, the line the error names, text the message contains)
CASES = {
    "fw-cfg-no-cpus": ("  - {type: fw-cfg, nb_cpus: 0}\n", 6, "greater than or equal to 1"),
    "fw-cfg-max-below-nb": ("  - {type: fw-cfg, nb_cpus: 4, max_cpus: 2}\n", 6, "max_cpus 2 is less than nb_cpus 4"),
    "fw-cfg-unknown-field": ("  - {type: fw-cfg, ncpus: 2}\n", 6, "ncpus"),
    "fw-cfg-twice": ("  - {type: fw-cfg}\n  - {type: fw-cfg, port: 0x520}\n", 7, "a second fw-cfg"),
    "fw-cfg-overlaps": ("  - {type: fw-cfg, port: 0x3f7}\n", 6, "overlaps devices[0] 'serial16550'"),
    "testdev-has-fixed-addresses": ("  - {type: pc-testdev, port: 0xe0}\n", 6, "port"),
    "testdev-overlaps-port": ("  - {type: pc-testdev}\n  - {type: port-value, port: 0xe4, value: 1}\n", 7,
                              "overlaps devices[1] 'pc-testdev' at 0xe0+0xc on the pio bus"),
    "testdev-irq-overlaps": ("  - {type: port-value, port: 0x2010, value: 1}\n  - {type: pc-testdev}\n", 7,
                             "pc-testdev at 0x2000+0x18 overlaps devices[1] 'port-value'"),
    "testdev-ioram-in-ram": ("  - {type: pc-testdev}\nmemory: [{gpa: 0, size: 2M}, {gpa: 0xff000000, size: 4K}]\n",
                             6, "pc-testdev at 0xff000000 is inside RAM"),
    "isa-debug-exit-past-0xffff": ("  - {type: isa-debug-exit, iobase: 0xfffe, iosize: 4}\n", 6, "run past port 0xffff"),
    "isa-debug-exit-overlaps": ("  - {type: isa-debug-exit}\n  - {type: debug-exit}\n", 7,
                                "debug-exit at 0xf4+0x4 overlaps devices[1] 'isa-debug-exit'"),
    "isa-debug-exit-stop-without-device": ("expect: {stop: {reason: isa-debug-exit, code: 1}}\n", 6,
                                           "expects a isa-debug-exit stop but there is no isa-debug-exit device"),
    "bochs-stop-without-device": ("expect: {stop: {reason: bochs-shutdown}}\n", 6, "no bochs-shutdown device"),
    "pm-timer-port-past-0xffff": ("  - {type: acpi-pm-timer, port: 0xfffe}\n", 6, "less than or equal to 65532"),
    "acpi-unaligned": ("  - {type: acpi-tables, rsdp: 0xf0008}\n", 6, "not 16-byte aligned"),
    "acpi-outside-bios-area": ("  - {type: acpi-tables, rsdp: 0x10000}\n", 6, "where the guest scans for the RSDP"),
    "acpi-not-in-ram": ("  - {type: acpi-tables}\nmemory: [{gpa: 0, size: 64K}]\n", 6, "not inside one memslot"),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_platform_device_is_status_2_with_file_line(case: str, command: str, tmp_path: Path, capsys) -> None:
    body, line, fragment = CASES[case]
    assert_bad_input(command, tmp_path / "s.yaml", HEAD + body, line, fragment, capsys)


def _load(tmp_path: Path, text: str):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return load_scenario(f)


def test_fw_cfg_ram_size_defaults_to_the_writable_slots(tmp_path: Path, capsys) -> None:
    text = HEAD + "  - {type: fw-cfg}\n"
    text += "memory: [{gpa: 0, size: 2M}, {gpa: 0x100000000, size: 1M}, {gpa: 0xfffff000, size: 4K, readonly: true}]\n"
    sc = _load(tmp_path, text)
    assert sc.device("fw-cfg").ram_size == (2 << 20) + (1 << 20)
    assert main(["check", str(tmp_path / "s.yaml")]) == 0
    assert _load(tmp_path, HEAD + "  - {type: fw-cfg, ram_size: 1G}\n").device("fw-cfg").ram_size == 1 << 30


def test_acpi_tables_are_in_guest_ram_at_boot(tmp_path: Path) -> None:
    sc = _load(tmp_path, HEAD + "  - {type: acpi-tables, rsdp: 0xe0010}\n  - {type: acpi-pm-timer, port: 0x608}\n")
    m = make_machine(sc)
    try:
        gpa, buf = m.ram[0]
        assert buf[0xE0010:0xE0018] == b"RSD PTR "
        rsdt = int.from_bytes(buf[0xE0010 + 16:0xE0010 + 20], "little")
        fadt = int.from_bytes(buf[rsdt + 36:rsdt + 40], "little")
        assert buf[fadt:fadt + 4] == b"FACP" and int.from_bytes(buf[fadt + 76:fadt + 80], "little") == 0x608
    finally:
        m.close()


ASM_EXIT = "  asm: |\n    movl $0x21, %eax\n    outl %eax, $0xf6\n    hlt\n"


def test_isa_debug_exit_ends_the_run_with_qemus_status(tmp_path: Path) -> None:
    text = ("name: t\ndescription: d\nguest:\n  mode: prot32\n" + ASM_EXIT
            + "devices:\n  - {type: isa-debug-exit, iobase: 0xf4, iosize: 4}\n")
    res = run_scenario(_load(tmp_path, text))
    assert (res.stop.reason, res.stop.code) == ("isa-debug-exit", 0x43)
    assert "0x21 written to port 0xf6: QEMU exits with status 67" in res.stop.detail
    assert res.devices["isa-debug-exit"] == {"writes": 1}
    assert not check_normal_stop(res).passed                      # exit(0x21): a failing test's status


def test_isa_debug_exit_of_zero_is_a_normal_stop(tmp_path: Path) -> None:
    text = ("name: t\ndescription: d\nguest:\n  mode: long64\n"
            "  asm: |\n    xorl %eax, %eax\n    outb %al, $0xf4\n    hlt\n"
            "devices:\n  - {type: isa-debug-exit}\n")
    f = tmp_path / "s.yaml"
    f.write_text(text)
    res = run_scenario(load_scenario(f))
    assert (res.stop.reason, res.stop.code) == ("isa-debug-exit", 1)
    assert check_normal_stop(res).passed
    assert main(["run", str(f)]) == 0


def test_plain_debug_exit_unchanged(tmp_path: Path) -> None:
    text = ("name: t\ndescription: d\nguest:\n  mode: prot32\n" + ASM_EXIT.replace("0xf6", "0xf4")
            + "devices:\n  - {type: debug-exit}\n")
    res = run_scenario(_load(tmp_path, text))
    assert (res.stop.reason, res.stop.code, res.stop.detail) == ("debug-exit", 0x21, "")


def test_pm_timer_reads_are_the_same_on_every_sim_run() -> None:
    """Virtual time: the timer counts retired guest instructions (1 ns each), so two runs read the
    same values, the second read ahead of the first by the ticks of the loop between them."""
    sc = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "acpi-pm-timer-long64.yaml")
    runs = [run_scenario(sc) for _ in range(2)]
    reads = [[e.fields["data"] for e in r.userspace if e.fields.get("port") == 0xB008] for r in runs]
    assert reads[0] == reads[1] and len(reads[0]) == 2
    first, second = (int.from_bytes(bytes.fromhex(d), "little") for d in reads[0])
    assert (runs[0].regs["rsi"], runs[0].regs["rdi"]) == (first, second)
    assert 0 < second - first < 0x100        # ~3000 instructions: about 11 ticks of 279 ns
    assert runs[0].devices["pmtimer"] == {"reads": 2, "last_value": second}


def test_platform_hooks_follow_the_backend() -> None:
    """The interfaces other parts plug into: KVM_IRQ_LINE is the VM fd's irq_line(irq, level) when
    the scenario asks for an in-kernel irqchip; virtual time is the vCPU fd's virtual_ns() if the
    backend has one, else the sim's retired instructions, else the host clock."""
    from types import SimpleNamespace as NS
    from kvmsim.scenario.runner import _platform

    lines: list[tuple[int, int]] = []
    vm = NS(irq_line=lambda irq, level: lines.append((irq, level)))
    sc = NS(kvm=NS(irqchip=True), limits=NS(max_guest_insns=1000))
    hw = NS(guest_insns=1234)
    p = _platform(sc, vm, NS(vcpu=NS(hw=hw)), [])
    p.irq_line(4, 1)
    assert lines == [(4, 1)] and p.clock_ns() == 1234
    assert _platform(NS(kvm=NS(), limits=sc.limits), vm, NS(virtual_ns=lambda: 77), []).irq_line is None
    assert _platform(NS(kvm=NS(), limits=sc.limits), vm, NS(virtual_ns=lambda: 77), []).clock_ns() == 77
    host = _platform(NS(kvm=NS(irqchip=True), limits=sc.limits), NS(), NS(), [])
    assert host.irq_line is None and 0 <= host.clock_ns() < 10**9


def test_multiboot_machine_with_the_platform(tmp_path: Path) -> None:
    """A multiboot kernel's machine as kvmsim kut builds it: fw-cfg's RAM size is the default 128 MiB
    the loader gives, the ACPI tables sit in the BIOS area the memory map reserves, and the kernel
    still boots and stops (the probe ends with a debug-exit write, on its own port here)."""
    root = Path(__file__).resolve().parents[1]
    text = (f"name: t\ndescription: d\nguest: {{multiboot: {root}/guests/multiboot/probe.elf, cmdline: x, "
            f"modules: [{root}/guests/multiboot/probe-env]}}\n"
            "devices:\n  - {type: serial16550}\n  - {type: debug-exit}\n  - {type: fw-cfg}\n  - {type: pc-testdev}\n"
            "  - {type: acpi-pm-timer}\n  - {type: acpi-tables}\n")
    sc = _load(tmp_path, text)
    assert sc.device("fw-cfg").ram_size == 128 << 20
    res = run_scenario(sc)
    assert res.stop.reason == "debug-exit" and "mem_upper=130048" in res.serial
