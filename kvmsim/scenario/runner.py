"""Run a scenario on a backend: build the guest, make the VM like a VMM would, run, collect a RunResult.

Backends differ only in where the `VmFd` comes from (kvm/kvm_main.py or realkvm/);
everything after that is the same userspace code.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import mmap
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Union

from kvmsim.errors import BackendError, ScenarioError
from kvmsim.realkvm.probe import kvm_available
from kvmsim.scenario.guest_build import GuestImage, build_guest
from kvmsim.scenario.result import ExitStream, RunResult
from kvmsim.scenario.schema import Scenario
from kvmsim.scenario.vcpu_state import apply_vcpu_state, cpuid_with_overrides
from kvmsim.uapi import (KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
                         HostEvent, KvmGuestDebug, KvmMsrExitReason, VcpuFd, VmFd)
from kvmsim.vmm import boot, multiboot
from kvmsim.vmm.acpi import build_acpi_tables
from kvmsim.vmm.bus import Bus
from kvmsim.vmm.cpuid import table_entries as cpuid_table_entries
from kvmsim.vmm.devices import DEVICE_TYPES
from kvmsim.vmm.devices.platform import Platform, host_clock_ns, host_page_flush, insn_clock_ns
from kvmsim.vmm.devices.python import DeviceError
from kvmsim.vmm.exits import Stop
from kvmsim.vmm.limits import limit_detail
from kvmsim.vmm.runloop import Vmm, VmmConfig

# The exit log's default bound: the first and the last this many userspace exits are kept, the ones
# between only counted (RunResult.userspace_omitted); ~500 bytes a record.
DEFAULT_KEEP_EXITS = 1000
KeepExits = Union[int, None, Literal["default"]]   # N each end | None: all | "default": see keep_exits_for

_MSR_REASONS = {"unknown": KvmMsrExitReason.UNKNOWN, "inval": KvmMsrExitReason.INVAL,
                "filter": KvmMsrExitReason.FILTER}


@dataclass
class Machine:
    """A built VM: what a test or the debugger holds on to."""

    scenario: Scenario
    image: GuestImage
    vm: VmFd
    vcpu: VcpuFd
    vmm: Vmm
    ram: list[tuple[int, mmap.mmap]]
    devices: dict[str, Any]
    ioeventfds: dict[str, Any]
    backend: str
    coalesced_zones: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (gpa, size)

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the VM (its fds and kvm_run mappings), then guest RAM."""
        self.vm.close()
        _release_ram(self.ram)


def keep_exits_for(sc: Scenario, keep: KeepExits = "default") -> int | None:
    """How many exits each end of the log keeps: a scenario that expects a userspace stream keeps
    all of it (its check compares the whole stream); others keep DEFAULT_KEEP_EXITS."""
    if keep != "default":
        return keep  # type: ignore[return-value]
    return None if sc.expect.userspace is not None else DEFAULT_KEEP_EXITS


def _release_ram(ram: list[tuple[int, mmap.mmap]]) -> None:
    for _gpa, buf in ram:
        try:
            buf.close()
        except BufferError:
            pass  # something still views this RAM (a debugger); the mapping goes with it
    ram.clear()


def build_image(sc: Scenario, elf_out: Path | None = None) -> GuestImage:
    """The guest linked at guest.load (default: the mode's origin), entered at guest.entry;
    `elf_out` also writes its linked ELF there (symbols for gdb)."""
    g = sc.guest
    if g.kernel is not None:
        return _multiboot_image(sc, elf_out)
    if g.asm is not None:
        line = sc.asm_line_offset()  # where the text starts: the key's line for `asm: insn`, the next for `|`
        image = build_guest(None, g.asm, g.mode, g.load, display_name=str(sc.path or "<asm>"), line_offset=line,
                            defines=g.defsym, elf_out=elf_out)
    else:
        image = build_guest(g.source_path, None, g.mode, g.load, display_name=g.source, defines=g.defsym,
                            elf_out=elf_out)
    return _with_entry(sc, image)


# Not a loader's bound: how much of a multiboot kernel's file bytes GuestImage.image flattens
# (for names and disassembly); the loader itself loads every segment.
MULTIBOOT_IMAGE_SPAN = 64 << 20


def _multiboot_image(sc: Scenario, elf_out: Path | None) -> GuestImage:
    """A multiboot kernel as a GuestImage for the tools that read one (debugger, diff, gdb): its
    file bytes flattened from the lowest segment (the entry's segment alone when the segments
    spread wider than MULTIBOOT_IMAGE_SPAN), prot32, the ELF's symbols.  `elf_out` gets a copy of
    the kernel file, which is already the ELF gdb wants."""
    k = sc.guest.kernel
    assert k is not None
    segs = list(k.segments)
    if max(s.paddr + len(s.data) for s in segs) - k.low > MULTIBOOT_IMAGE_SPAN:
        segs = [next((s for s in segs if s.paddr <= k.entry < s.end), segs[0])]
    low = min(s.paddr for s in segs)
    flat = bytearray(max(s.paddr + len(s.data) for s in segs) - low)
    for s in segs:
        flat[s.paddr - low:s.paddr - low + len(s.data)] = s.data
    if elf_out is not None:
        try:
            shutil.copyfile(sc.guest.source_path, elf_out)  # type: ignore[arg-type]
        except OSError as e:
            raise ScenarioError(str(elf_out), None, f"cannot write the ELF: {e.strerror or e}") from None
    return GuestImage(mode="prot32", load_addr=low, entry=k.entry, image=bytes(flat), symbols=dict(k.symbols))


def _with_entry(sc: Scenario, image: GuestImage) -> GuestImage:
    entry = sc.guest.entry
    if entry is None:
        entry = image.entry         # _start, else the load address
    elif isinstance(entry, str):
        if entry not in image.symbols:
            near = difflib.get_close_matches(entry, [n for n in image.symbols if not n.startswith(".")], 1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("guest", "entry"),
                                f"field guest.entry: no symbol {entry!r} in the guest{hint}")
        entry = image.symbols[entry]
    if image.mode == "real16" and entry > 0xFFFF:
        field = "entry" if sc.guest.entry is not None else "load"
        raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("guest", field),
                            f"field guest.{field}: real16 entry {entry:#x} is not reachable with CS = 0 "
                            "(boot.py's real16 set-up); load and enter below 0x10000")
    return image if entry == image.entry else dataclasses.replace(image, entry=entry)


def preflight(sc: Scenario) -> GuestImage:
    """What `run` can reject before the guest starts and the schema cannot see: the guest assembles
    and links, its entry symbol exists, its image lies inside one memslot and clear of the boot
    tables, which lie inside one memslot too.  `check` and `make_machine` both call this."""
    image = build_image(sc)
    if sc.guest.kernel is not None:
        return image     # the schema placed every segment, the modules and the info area (plan_boot)
    _image_slot(sc, image)
    _boot_tables_slot(sc, image)
    return image


def _boot_tables_slot(sc: Scenario, image: GuestImage) -> None:
    """prot32/long64: setup_boot writes its GDT, TSS, IDT (and long64's page tables) at
    boot.GDT_BASE..TABLES_END; they need RAM and must not land on the image."""
    end = boot.TABLES_END.get(image.mode, 0)
    if not end:
        return
    where = str(sc.path) if sc.path else None
    lo = boot.GDT_BASE
    if lo < image.end and image.load_addr < end:
        raise ScenarioError(where, sc.line_of("guest", "load"),
                            f"field guest.load: the guest image at {image.load_addr:#x}+{len(image.image):#x} "
                            f"overlaps the {image.mode} boot tables at {lo:#x}-{end - 1:#x} (GDT, TSS, IDT"
                            f"{', page tables' if image.mode == 'long64' else ''}); load it elsewhere")
    if not any(m.gpa <= lo and end <= m.gpa + m.size and not m.readonly for m in sc.memory):
        raise ScenarioError(where, sc.line_of("memory"),
                            f"{image.mode} boot tables need writable RAM at {lo:#x}-{end - 1:#x} "
                            "(one memslot); none covers it")


def _image_slot(sc: Scenario, image: GuestImage) -> int:
    for i, m in enumerate(sc.memory):
        if m.gpa <= image.load_addr and image.load_addr + len(image.image) <= m.gpa + m.size:
            return i
    raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("memory"),
                        f"guest image at {image.load_addr:#x}+{len(image.image):#x} is not inside any memory slot")


def _params(sc: Scenario):
    from kvmsim.kvm.vcpu import KvmParams  # the sim model (unicorn) loads only for a sim run

    k = sc.kvm
    return KvmParams(enable_ept=k.enable_ept, unrestricted_guest=k.unrestricted_guest,
                     emulate_invalid_guest_state=k.emulate_invalid_guest_state,
                     force_emulation_prefix=k.force_emulation_prefix,
                     enable_vmware_backdoor=k.enable_vmware_backdoor, host_is_hypervisor=k.host_is_hypervisor,
                     mmio_caching=k.mmio_caching, exit_on_emulation_error=k.exit_on_emulation_failure,
                     emulator=k.emulator.model_dump(), ple_gap=k.ple_gap, ple_window=k.ple_window,
                     ple_window_grow=k.ple_window_grow, ple_window_shrink=k.ple_window_shrink,
                     ple_window_max=k.ple_window_max, quirk_mwait_never_ud_faults=k.quirk_mwait_never_ud_faults,
                     bus_lock_detection_exit=k.bus_lock_exit)


BACKENDS = ("sim", "kvm")


@functools.lru_cache(maxsize=1)
def kvm_probe() -> tuple[bool, str]:
    """realkvm.probe.kvm_available(), asked once per process."""
    return kvm_available()


def _open_vm(sc: Scenario, backend: str) -> VmFd:
    if backend == "sim":
        from kvmsim.kvm.kvm_main import SimKvm  # each backend loads only for a run on it (the sim: unicorn)

        return SimKvm().create_vm(_params(sc))
    if backend != "kvm":
        raise BackendError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    from kvmsim.realkvm.backend import RealKvm  # likewise: /dev/kvm ioctls only for a kvm run

    ok, why = kvm_probe()
    if not ok:
        raise BackendError(f"the kvm backend is not available here: {why}")
    return RealKvm().create_vm(owns_kvm=True)


def make_machine(sc: Scenario, backend: str = "sim", image: GuestImage | None = None) -> Machine:
    """Steps a VMM takes: memory, VM, vCPU, CPUID, boot state, devices.

    `image`: an already built guest to load instead of building `sc.guest` (the random-guest
    campaign patches bytes into one built template).  Anything that fails half-way releases
    what was already made (fds, mappings).
    """
    image = preflight(sc) if image is None else image
    vm = _open_vm(sc, backend)
    ram: list[tuple[int, mmap.mmap]] = []
    try:
        return _make_machine(sc, backend, image, vm, ram)
    except BaseException:
        vm.close()
        _release_ram(ram)
        raise


def _make_machine(sc: Scenario, backend: str, image: GuestImage, vm: VmFd,
                  ram: list[tuple[int, mmap.mmap]]) -> Machine:
    for slot, m in enumerate(sc.memory):
        buf = mmap.mmap(-1, m.size)
        ram.append((m.gpa, buf))
        vm.set_user_memory_region(slot, m.gpa, memoryview(buf), (KVM_MEM_READONLY if m.readonly else 0)
                                  | (KVM_MEM_LOG_DIRTY_PAGES if m.log_dirty else 0))
    info_addr = _load_multiboot(ram, sc) if sc.guest.kernel is not None else None
    if info_addr is None:
        _load_image(ram, image, sc)
    if sc.kvm.irqchip:
        vm.create_irqchip()            # before the vCPU, which then gets its in-kernel LAPIC
    if sc.kvm.pit:
        vm.create_pit2()
    vcpu = vm.create_vcpu(0)
    if sc.kvm.cpuid_replaced:
        vcpu.set_cpuid(cpuid_table_entries(sc.kvm.cpuid.entries))  # type: ignore[union-attr]
    elif sc.kvm.cpuid_overrides:
        vcpu.set_cpuid(cpuid_with_overrides(vm, sc, backend))
    if backend == "kvm":
        # Each KVM_RUN is bounded by the watchdog; the whole run by VmmConfig.wall_seconds (kick).
        vcpu.run_timeout = min(vcpu.run_timeout or sc.limits.wall_seconds, sc.limits.wall_seconds)
    if sc.kvm.user_space_msr:
        mask = KvmMsrExitReason(0)
        for r in sc.kvm.user_space_msr:
            mask |= _MSR_REASONS[r]
        vm.enable_user_space_msr(mask)
    anchor = boot.GDT_BASE if boot.TABLES_END.get(image.mode) else image.load_addr  # the slot boot writes
    gpa0, ram0 = next(((g, b) for g, b in ram if g <= anchor < g + len(b)), ram[0])
    boot.setup_boot(memoryview(ram0), gpa0, vcpu, image.mode, image.entry,
                    user=[(r.addr, r.size) for r in sc.paging.user])
    if info_addr is not None:
        multiboot.handoff(vcpu, info_addr)
    apply_vcpu_state(sc, vcpu)
    pio, mmio_bus = Bus("pio"), Bus("mmio")
    devices: dict[str, Any] = {}
    ioeventfds: dict[str, Any] = {}
    zones: dict[str, tuple[int, int]] = {}
    platform = _platform(sc, vm, vcpu, ram)
    for d in sc.devices:
        name = d.name or d.type
        if d.type == "acpi-tables":
            _write_acpi_tables(ram, sc, d.rsdp)
            continue
        if d.type == "bios-irq":
            _write_bios_irq(ram, vm, d.handlers)
            continue
        if d.type == "ioeventfd":
            ioeventfds[name] = vm.ioeventfd(d.port if d.port is not None else d.gpa, d.len,
                                            pio=d.port is not None, datamatch=d.datamatch)
            continue
        if d.type == "coalesced-mmio":
            vm.register_coalesced_mmio(d.gpa, d.size)
            zones[name] = (d.gpa, d.size)
            continue
        params = d.model_dump(exclude={"type", "name"})
        if d.type == "python":
            params.update(cls=d.device_class, spec=params.pop("class_"))
        try:
            dev = DEVICE_TYPES[d.type](name=name, **params)
        except DeviceError as e:    # a Python device's constructor failed this time (it passed at load)
            raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("devices", sc.devices.index(d)),
                                str(e)) from None
        devices[name] = dev
        if hasattr(dev, "connect"):
            dev.connect(platform)
        if hasattr(dev, "regions"):      # a device on several ranges (pc-testdev)
            for bus, base, size, part in dev.regions():
                (pio if bus == "pio" else mmio_bus).register(base, size, part)
        elif params.get("gpa") is not None:
            mmio_bus.register(params["gpa"], dev.size, dev)
        else:
            pio.register(params["port"] if "port" in params else params["iobase"], dev.size, dev)
    config = VmmConfig(unclaimed_io=sc.userspace.unclaimed_io, unclaimed_mmio=sc.userspace.unclaimed_mmio,
                       msr_answers=dict(sc.userspace.msr), max_exits=sc.limits.max_exits,
                       wall_seconds=sc.limits.wall_seconds, events=_events(sc),
                       keep_exits=keep_exits_for(sc), on_hlt=sc.vmm.on_hlt, coalesced_mmio=bool(zones),
                       **_vmm_events(sc))
    _vm_exit_events(sc, vcpu, backend)
    _insn_budget(sc, vcpu, config)
    kick = getattr(vcpu, "kick", None)
    vmm = Vmm(vcpu, pio, mmio_bus, config, kick=kick)
    return Machine(sc, image, vm, vcpu, vmm, ram, devices, ioeventfds, backend, zones)


def _platform(sc: Scenario, vm: VmFd, vcpu: VcpuFd, ram: list[tuple[int, mmap.mmap]]) -> Platform:
    """The machine-wide services devices get: virtual time (the vCPU fd's virtual_ns() where the
    backend has one, else the sim's retired instructions when it counts them, else the host clock); KVM_IRQ_LINE when the
    scenario asks for an in-kernel irqchip and the backend has it; page flushes on the RAM's host pages."""
    model = getattr(vcpu, "vcpu", None)
    hw = model.hw if model is not None else None
    own = getattr(vcpu, "virtual_ns", None)      # a backend's own virtual clock (the one its TSC reads), if any
    if callable(own):
        clock = own
    elif hw is not None and sc.limits.max_guest_insns:
        clock = insn_clock_ns(lambda: hw.guest_insns)
    else:
        clock = host_clock_ns()
    irq_line = getattr(vm, "irq_line", None) if getattr(sc.kvm, "irqchip", False) else None
    return Platform(clock_ns=clock, irq_line=irq_line, flush_page=host_page_flush(ram))


BIOS_IRQ_SOURCE = Path(__file__).resolve().parent.parent / "vmm" / "bios_irq.S"
PIC_MASTER_BASE, PIC_SLAVE_BASE = 0x08, 0x70
# Simplified: SeaBIOS also unmasks the lines of its own devices (keyboard, RTC, mouse, disks), none of
# which raise them here; only IRQ0 (and the cascade) is open.
PIC_MASTER_IMR, PIC_SLAVE_IMR = 0xFF & ~0b101, 0xFF
PIC_SLAVE_ELCR = 0b1100                  # IRQ10/11: the PCI interrupt lines SeaBIOS's PIIX setup makes level


def _write_bios_irq(ram: list[tuple[int, mmap.mmap]], vm: VmFd, handlers: int) -> None:
    """Firmware's part for hardware IRQs (schema.BiosIrq): the handler stub and its IVT entries in RAM,
    then the PIC and PIT state SeaBIOS's pic_setup and pit_setup leave (KVM_SET_IRQCHIP, KVM_SET_PIT2)."""
    stub = build_guest(BIOS_IRQ_SOURCE, None, "real16", origin=handlers)
    _ram_write(ram, handlers, stub.image)
    seg = handlers >> 4 & 0xF000
    ivt = bytearray(0x400)
    for gpa, buf in ram:
        if gpa == 0:
            ivt[:] = buf[:0x400]
    for base, sym in ((PIC_MASTER_BASE, "irq_master"), (PIC_SLAVE_BASE, "irq_slave")):
        entry = (stub.symbols[sym] - (seg << 4)) | seg << 16
        for v in range(base, base + 8):
            ivt[4 * v:4 * v + 4] = entry.to_bytes(4, "little")
    _ram_write(ram, 0, bytes(ivt))
    for chip, base, imr, elcr in ((KVM_IRQCHIP_PIC_MASTER, PIC_MASTER_BASE, PIC_MASTER_IMR, 0),
                                  (KVM_IRQCHIP_PIC_SLAVE, PIC_SLAVE_BASE, PIC_SLAVE_IMR, PIC_SLAVE_ELCR)):
        pic = vm.get_irqchip(chip)          # ICW1 0x11, ICW2 base, ICW3, ICW4 0x01 (8086 mode), then OCW1
        pic.irq_base, pic.init4, pic.init_state, pic.imr, pic.elcr = base, 1, 0, imr, elcr & pic.elcr_mask
        vm.set_irqchip(chip, pic)
    pit = vm.get_pit2()                     # control word 0x34: counter 0, LSB then MSB, mode 2, binary; count 0
    ch = pit.channels[0]
    ch.rw_mode = ch.read_state = ch.write_state = 3
    ch.mode, ch.bcd, ch.gate, ch.count = 2, 0, 1, 0x10000
    vm.set_pit2(pit)


def _ram_write(ram: list[tuple[int, mmap.mmap]], addr: int, data: bytes) -> None:
    for gpa, buf in ram:
        if gpa <= addr and addr + len(data) <= gpa + len(buf):
            buf[addr - gpa:addr - gpa + len(data)] = data
            return
    raise ValueError(f"{addr:#x}+{len(data):#x} is not inside one memslot (the schema checks it first)")


def _write_acpi_tables(ram: list[tuple[int, mmap.mmap]], sc: Scenario, rsdp: int) -> None:
    """Firmware's part: the ACPI tables in guest RAM before the vCPU runs (vmm/acpi.py)."""
    timer = next((d.port for d in sc.devices if d.type == "acpi-pm-timer"), 0)
    blob = build_acpi_tables(rsdp, pm_tmr_blk=timer)
    for gpa, buf in ram:
        if gpa <= rsdp and rsdp + len(blob) <= gpa + len(buf):
            buf[rsdp - gpa:rsdp - gpa + len(blob)] = blob
            return
    raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("devices"),   # the schema checks it first
                        f"ACPI tables at {rsdp:#x}+{len(blob):#x} are not inside any memory slot")


def _load_image(ram: list[tuple[int, mmap.mmap]], image: GuestImage, sc: Scenario) -> None:
    for gpa, buf in ram:
        if gpa <= image.load_addr and image.load_addr + len(image.image) <= gpa + len(buf):
            off = image.load_addr - gpa
            buf[off:off + len(image.image)] = image.image
            return
    raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("memory"),
                        f"guest image at {image.load_addr:#x}+{len(image.image):#x} is not inside any memory slot")


def _load_multiboot(ram: list[tuple[int, mmap.mmap]], sc: Scenario) -> int:
    """Load the multiboot kernel, its modules and the info area (vmm/multiboot.py); returns the
    info block's GPA for the handoff.  The modules are read now; one that changed since the
    scenario was checked is placed again and may no longer fit (a file:line error)."""
    g = sc.guest
    where = str(sc.path) if sc.path else None
    modules: list[tuple[bytes, bytes]] = []
    for i, (name, path) in enumerate(zip(g.modules, g.module_paths)):
        try:
            with path.open("rb") as f:
                data = f.read(multiboot.MAX_MODULE_BYTES + 1)
        except OSError as e:
            raise ScenarioError(where, sc.line_of("guest", "modules", i),
                                f"field guest.modules[{i}]: cannot read {name!r}: {e.strerror or e}") from None
        if len(data) > multiboot.MAX_MODULE_BYTES:
            raise ScenarioError(where, sc.line_of("guest", "modules", i), f"field guest.modules[{i}]: module "
                                f"{name!r} is larger than kvmsim loads ({multiboot.MAX_MODULE_BYTES:#x} bytes)")
        modules.append((name.encode(), data))
    try:
        plan = multiboot.plan_boot(g.kernel, [len(d) for _, d in modules], sc.ram_ranges(),  # type: ignore[arg-type]
                                   g.multiboot_strings_size())
        multiboot.load([(gpa, memoryview(buf)) for gpa, buf in ram], g.kernel, plan,  # type: ignore[arg-type]
                       g.multiboot_cmdline(), modules)
    except multiboot.MultibootError as e:
        loc = ("memory",) if e.field == "memory" else ("guest", e.field) + (() if e.index is None else (e.index,))
        shown = ".".join(map(str, loc[:2])) + ("" if e.index is None else f"[{e.index}]")
        raise ScenarioError(where, sc.line_of(*loc), f"field {shown}: {e.msg}") from None
    return plan.info_addr


def _inject_action(inj):
    """What userspace does for `inject:` — KVM_NMI or KVM_INTERRUPT on the vCPU fd."""
    return (lambda v: v.nmi()) if inj == "nmi" else (lambda v, irq=inj.irq: v.interrupt(irq))


def _events(sc: Scenario) -> dict[int, list]:
    """Events at a userspace-exit count: the VMM issues the ioctl before its next KVM_RUN."""
    out: dict[int, list] = {}
    for ev in sc.events:
        if ev.at is not None and ev.at.userspace_exit is not None:
            out.setdefault(ev.at.userspace_exit, []).append(_inject_action(ev.inject))
    return out


def _vmm_events(sc: Scenario) -> dict[str, dict]:
    """vmm.irqs and vmm.guest_debug by userspace-exit count (VmmConfig.irqs / .guest_debug)."""
    irqs: dict[int, list[int]] = {}
    for irq in sc.vmm.irqs:
        irqs.setdefault(irq.at_userspace_exit, []).append(irq.vector)
    dbg: dict[int, list[KvmGuestDebug]] = {}
    for g in sc.vmm.guest_debug:
        arg = KvmGuestDebug(control=g.control_bits)
        for i, v in enumerate(g.debugreg):
            arg.arch.debugreg[i] = v
        dbg.setdefault(g.at_userspace_exit, []).append(arg)
    return {"irqs": irqs, "guest_debug": dbg}


def _vm_exit_events(sc: Scenario, vcpu: VcpuFd, backend: str) -> None:
    """Events tied to VM exits or guest instructions: host events on the vCPU's virtual time
    (uapi.HostEvent), which only the sim's vCPU fd keeps.

    `at: {exit: N}` lands before the VM entry that follows the Nth VM exit (as an ioctl from another
    userspace thread would); `every: {guest_insns: N}, host: nmi` is a host NMI after N guest
    instructions without another exit (the count restarts at every exit, so runs stay deterministic).
    """
    queue = getattr(vcpu, "host_event", None)
    for i, ev in enumerate(sc.events):
        if ev.at is not None and ev.at.userspace_exit is not None:
            continue
        if queue is None:
            raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("events", i),
                                f"events[{i}]: VM-exit and guest-instruction events need the sim backend")
        if ev.at is not None:
            if ev.inject is None:
                raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("events", i),
                                    f"events[{i}]: 'at: exit' takes inject: nmi or {{irq: N}}")
            queue(HostEvent("KVM_NMI", at_exit=ev.at.exit) if ev.inject == "nmi"
                  else HostEvent("KVM_INTERRUPT", ev.inject.irq, at_exit=ev.at.exit))
        elif ev.host in ("nmi", "tick"):
            queue(HostEvent("HOST_NMI" if ev.host == "nmi" else "HOST_TICK", ev.every.guest_insns))
        else:
            raise ScenarioError(str(sc.path) if sc.path else None, sc.line_of("events", i),
                                f"events[{i}]: 'every' goes with host: nmi")


def _insn_budget(sc: Scenario, vcpu: VcpuFd, config: VmmConfig) -> None:
    """limits.max_guest_insns (default 50 M; null: not counted): the sim's silicon counts retired
    instructions and stops at the budget.
    Not enforced on /dev/kvm (no instruction count there; its runs are bounded by wall time)."""
    model = getattr(vcpu, "vcpu", None)
    if model is None:
        return
    hw, n = model.hw, sc.limits.max_guest_insns
    if n is None:
        return      # nothing counted: unicorn runs without its per-instruction count hook
    hw.insn_limit = n
    config.limit_reached = lambda: None if not hw.insn_limit_hit else limit_detail("max_guest_insns", n) + (
        "" if hw.halted_forever is None else
        f"; halted at rip {hw.halted_forever:#x} with nothing that could wake it (KVM would sleep on)")


def run_machine(m: Machine) -> RunResult:
    t0 = time.monotonic()
    stop = m.vmm.run()
    wall = time.monotonic() - t0
    regs = m.vcpu.get_regs()
    sregs = m.vcpu.get_sregs()
    serial = "".join(d.text for d in m.devices.values() if hasattr(d, "text"))
    res = RunResult(scenario=m.scenario.name, backend=m.backend, stop=stop, userspace=m.vmm.exits,
                    userspace_omitted=m.vmm.exits_omitted,
                    userspace_omitted_at=m.vmm.config.keep_exits if m.vmm.exits_omitted else 0,
                    serial=serial, regs=regs.as_dict(),
                    sregs={k: getattr(sregs, k) for k in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")},
                    devices={}, wall_seconds=wall)
    for n, d in m.devices.items():
        try:
            res.devices[n] = dict(d.counters)
        except DeviceError as e:     # a Python device's state() failed: the run ends in its error
            res.devices[n], res.stop = {}, Stop("device-error", detail=str(e))
    for name, efd in m.ioeventfds.items():
        res.devices[name] = {"kicks": efd.read_count()}
    for name, (gpa, size) in m.coalesced_zones.items():
        res.devices[name] = {"ring_writes": sum(gpa <= a < gpa + size for a, _n, pio in m.vmm.coalesced if not pio)}
    vcpu_model = getattr(m.vcpu, "vcpu", None)
    if vcpu_model is not None:
        res.guest_insns = vcpu_model.hw.guest_insns if vcpu_model.hw.insn_limit is not None else None
        res.exits = dict(vcpu_model.stat.exits_by_reason)
        res.emulation = {_emultype_key(t): n for t, n in vcpu_model.stat.emulation_by_type.items()}
        res.exceptions = list(vcpu_model.stat.injected_exceptions)
    for want in m.scenario.expect.memory or []:
        res.memory.append({"gpa": want.gpa, "bytes": _read_guest(m, want.gpa, len(bytes.fromhex(want.bytes))).hex()})
    for slot, mem in enumerate(m.scenario.memory):
        if mem.log_dirty:                                 # KVM_GET_DIRTY_LOG, as a migrating VMM reads it
            bitmap = m.vm.get_dirty_log(slot)
            res.dirty_log[slot] = [mem.gpa + (i << 12) for i in range(min(len(bitmap) * 8, mem.size >> 12))
                                   if bitmap[i >> 3] >> (i & 7) & 1]
    return res


def _emultype_key(t: int) -> str:
    from kvmsim.kvm.emulate.codes import EmulType  # only for sim results (the model is loaded by then)

    if t == 0:
        return "0"
    return "|".join(f.name for f in EmulType if f & t)


def _read_guest(m: Machine, gpa: int, n: int) -> bytes:
    for base, buf in m.ram:
        if base <= gpa and gpa + n <= base + len(buf):
            return bytes(buf[gpa - base: gpa - base + n])
    return b""


class Tracer(Protocol):
    """What records a sim run's probe events as trace lines (trace/recorder.py's Recorder): the
    caller passes one in, so that the scenario layer never imports the observers above it."""

    def start(self) -> object: ...
    def stop(self) -> None: ...
    def lines(self) -> list[str]: ...


def run_scenario(sc: Scenario, backend: str = "sim", trace: Tracer | None = None,
                 host_events: bool | None = None, max_exits: int | None = None,
                 image: GuestImage | None = None, keep_exits: KeepExits = "default",
                 exits_stream: ExitStream | None = None) -> RunResult:
    """Build, run and tear down one scenario.

    trace: on the sim, record the run with this tracer into RunResult.trace (`run --trace`
    passes a trace.recorder.Recorder); the kvm backend has no probes and ignores it.
    host_events (default: on for the kvm backend): record the real kernel's kvm:* tracepoints
    of the run into RunResult.host_events (realkvm/hostevents.py).  max_exits overrides the
    scenario's limit (diff replays a run up to a given userspace exit).  image: see make_machine.
    keep_exits: records kept at each end of the exit log (None: all; default: keep_exits_for).
    exits_stream: every userspace exit also goes there, as the run goes (`run --exits-jsonl`).
    """
    tracer = trace if backend == "sim" and trace is not None else None
    if tracer is not None:
        tracer.start()
    m = make_machine(sc, backend, image)
    if max_exits is not None:
        m.vmm.config.max_exits = max_exits
    m.vmm.config.keep_exits = keep_exits_for(sc, keep_exits)
    if exits_stream is not None:
        exits_stream.begin(sc.name, str(sc.path) if sc.path else None, backend)
        m.vmm.config.exit_sink = exits_stream.write
    host = None
    try:
        if backend == "kvm" and (host_events is None or host_events):
            from kvmsim.realkvm.hostevents import HostEventRecorder  # tracefs, for kvm runs only

            with HostEventRecorder() as host:
                res = run_machine(m)
        else:
            res = run_machine(m)
    finally:
        if tracer is not None:
            tracer.stop()
        m.close()
    if tracer is not None:
        res.trace = tracer.lines()
    if host is not None:
        res.host_events = host.summary
    if exits_stream is not None:
        exits_stream.end(res)
    return res
