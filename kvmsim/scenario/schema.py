"""Scenario file schema (pydantic v2): what a user writes in scenarios/*.yaml.

Every model forbids unknown keys so that a typo is an error with a line number, not a
silently ignored setting.  Integers accept YAML ints (YAML 1.1 reads 0x.. natively) and
strings ("0xd0000000", "4096", "1_000"); sizes also accept "4K", "2M", "1G".  Validation
that needs a file's directory (the guest source) reads it from the pydantic context key
"base_dir"; the loader (loader.py) supplies it and maps every error to file:line.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field,
                      PrivateAttr, Tag, ValidationInfo, WithJsonSchema, model_validator)

from kvmsim.kvm.memslot import KvmUserspaceMemoryRegion, kvm_set_memory_region_check
from kvmsim.scenario.pydevice import DeviceClassError, load_device_class
from kvmsim.scenario.vcpu_state import sregs_problem
from kvmsim.uapi import KVM_MEM_READONLY, KvmInternalError
from kvmsim.vmm.acpi import RSDP_SCAN_END, RSDP_SCAN_START, acpi_tables_size
from kvmsim.vmm.cpuid import cpuid_function_is_indexed
from kvmsim.vmm.devices.testdev import IORAM_BASE, IORAM_LEN, IRQ_LINES, IRQ_PORT, TESTDEV_PORT, TESTDEV_PORT_SPAN
from kvmsim.vmm.multiboot import (MAX_KERNEL_BYTES, MAX_MODULE_BYTES, MAX_MODULES, MultibootError, MultibootKernel,
                                  RamRange, parse_kernel, plan_boot)

REPO_ROOT = Path(__file__).resolve().parents[2]


class FieldError(ValueError):
    """A validator's complaint about a sub-field: loc is relative to the model that raised it."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


# ---------------------------------------------------------------- scalar types

def parse_int(v: Any) -> int:
    """An integer from YAML: int, or a string in any Python base prefix ('0x10', '16', '1_000')."""
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got the boolean {v}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip(), 0)
        except ValueError:
            raise ValueError(f"expected an integer like 16 or '0x10', got {v!r}") from None
    raise ValueError(f"expected an integer, got {type(v).__name__} {v!r}")


_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f_]+|[0-9_]+)\s*([kmgt])(?:i?b)?\s*$", re.I)
_SIZE_SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40}


def parse_size(v: Any) -> int:
    """A byte count: an integer, or a string with a binary suffix ('4K', '2M', '1G', '2MiB')."""
    if isinstance(v, str) and (m := _SIZE_RE.match(v)):
        return int(m.group(1), 0) << _SIZE_SHIFT[m.group(2).lower()]
    try:
        return parse_int(v)
    except ValueError:
        raise ValueError(f"expected a size like 4096, '0x1000', '4K', '2M' or '1G', got {v!r}") from None


def _one_of(*allowed: int):
    def check(v: int) -> int:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}, got {v}")
        return v
    return AfterValidator(check)


_INT_JSON = WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^(0x)?[0-9a-fA-F_]+$"}]})
_SIZE_JSON = WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "examples": ["4K", "2M", "0x1000"]}]})

U8 = Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFF), _INT_JSON]
U16 = Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFF), _INT_JSON]
U32 = Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFF_FFFF), _INT_JSON]
U64 = Annotated[int, BeforeValidator(parse_int), Field(ge=0, lt=1 << 64), _INT_JSON]
Count = Annotated[int, BeforeValidator(parse_int), Field(ge=0), _INT_JSON]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0, lt=1 << 64), _SIZE_JSON]
IoSize = Annotated[int, BeforeValidator(parse_int), _one_of(1, 2, 4), _INT_JSON]
AccessLen = Annotated[int, BeforeValidator(parse_int), _one_of(1, 2, 4, 8), _INT_JSON]


def parse_hex_bytes(v: Any) -> str:
    """Bytes written as hex, in memory order: '34120000', '34 12 00 00' -> '34120000'."""
    if not isinstance(v, str):
        raise ValueError(f"expected hex bytes in memory order like '34120000', got {v!r}")
    s = re.sub(r"[\s:]", "", v).lower()
    if not s or len(s) % 2 or not re.fullmatch(r"[0-9a-f]*", s):
        raise ValueError(f"expected hex bytes in memory order like '34120000', got {v!r}")
    return s


def parse_data(v: Any) -> int | str:
    """Exit data: an integer (compared with the little-endian value) or hex bytes in memory order."""
    if isinstance(v, str) and not v.strip().lower().startswith("0x"):
        return parse_hex_bytes(v)
    return parse_int(v)


HexBytes = Annotated[str, BeforeValidator(parse_hex_bytes)]
Data = Annotated[Union[int, str], BeforeValidator(parse_data), _INT_JSON]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- guest

# reset: no boot set-up at all, the vCPU as KVM's reset leaves it (CS:IP f000:fff0, CS base 0xffff0000).
GuestMode = Literal["real16", "prot32", "long64", "reset"]
_SYMBOL_RE = re.compile(r"^[A-Za-z_.$][A-Za-z0-9_.$]*$")
MAX_CMDLINE = 4096   # not the spec's: a bound on the strings in the buffer after the image (vmm/multiboot.py)


def guest_source_candidates(source: str, base_dir: Path | None) -> list[Path]:
    """Where a guest source is looked for: next to the YAML file, then the repo, then the cwd."""
    p = Path(source)
    if p.is_absolute():
        return [p]
    dirs = [base_dir] if base_dir is not None else []
    if base_dir is not None:
        dirs += [d for d in Path(base_dir).resolve().parents if (d / "guests").is_dir()][:1]
    dirs += [REPO_ROOT, Path.cwd()]
    seen: list[Path] = []
    for d in dirs:
        if (c := Path(d) / p) not in seen:
            seen.append(c)
    return seen


def parse_entry(v: Any) -> int | str:
    """guest.entry: an address (int, '0x...', decimal text) or a symbol name."""
    if isinstance(v, str) and _SYMBOL_RE.match(v.strip()):
        return v.strip()
    v = parse_int(v)
    if not 0 <= v < 1 << 64:
        raise ValueError(f"entry address {v:#x} is outside 0..2^64-1")
    return v


class Guest(_Model):
    """Guest code: a GNU as source file or inline text and the mode the vCPU starts in, or a
    multiboot kernel (an ELF file, with its command line and modules) entered in the multiboot
    handoff state (vmm/multiboot.py)."""

    source: str | None = Field(None, description="path relative to the YAML file, or repo-relative (guests/x.S)")
    asm: str | None = Field(None, description="inline GNU as source")
    multiboot: str | None = Field(None, description="a multiboot (v1) kernel, an ELF file such as a "
                                  "kvm-unit-tests x86/*.flat; path as for source. The vCPU starts in the "
                                  "multiboot handoff state (32-bit protected mode, EAX=0x2BADB002, EBX=info block)")
    cmdline: str | None = Field(None, max_length=MAX_CMDLINE,
                                description="multiboot: the command line (QEMU's -append); the info block "
                                            "holds '<multiboot> <cmdline>' as QEMU passes it")
    modules: list[str] = Field(default_factory=list, max_length=MAX_MODULES,
                               description="multiboot: module files (kvm-unit-tests reads its KEY=VALUE "
                                           "environ from the first), path as for source")
    mode: GuestMode = Field(description="where the vCPU starts; with multiboot: omitted (prot32, the "
                                        "handoff's mode) or prot32")
    defsym: dict[str, Annotated[int, BeforeValidator(parse_int), _INT_JSON]] = Field(
        default_factory=dict, description="as --defsym NAME=VALUE")
    load: U64 | None = Field(None, description="GPA the image is linked and loaded at (default: the "
                                               "mode's origin, 0x1000 real16, 0x100000 prot32/long64)")
    entry: Annotated[Union[int, str], BeforeValidator(parse_entry), _INT_JSON] | None = Field(
        None, description="where execution begins: a symbol of the guest or an address (default: "
                          "_start, else the load address)")

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda s: s.update(
        required=[r for r in s.get("required", []) if r != "mode"]))

    _source_path: Path | None = PrivateAttr(None)
    _kernel: MultibootKernel | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _multiboot_mode(cls, data: Any) -> Any:
        """A multiboot kernel needs no mode: the handoff is 32-bit protected mode."""
        if isinstance(data, dict) and data.get("multiboot") is not None and "mode" not in data:
            return {**data, "mode": "prot32"}
        return data
    _module_paths: list[Path] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _exactly_one_source(self, info: ValidationInfo) -> "Guest":
        if sum(x is not None for x in (self.source, self.asm, self.multiboot)) != 1:
            raise ValueError("give exactly one of 'source' (a file), 'asm' (inline text) or 'multiboot' (a kernel)")
        base = (info.context or {}).get("base_dir")
        base = Path(base) if base is not None else None
        if self.multiboot is not None:
            return self._multiboot_kernel(base)
        for name in ("cmdline", "modules"):
            if name in self.model_fields_set:
                raise FieldError((name,), f"{name} goes with a multiboot kernel (guest.multiboot)")
        for name in self.defsym:
            if not _SYMBOL_RE.match(name):
                raise FieldError(("defsym", name), f"not a valid assembler symbol name: {name!r}")
        if self.mode == "reset" and self.entry is not None:
            raise FieldError(("entry",), "mode reset starts at the reset vector (CS base 0xffff0000, IP "
                             "0xfff0); set vcpu.regs.rip and vcpu.sregs.cs to start elsewhere")
        if self.mode == "real16" and isinstance(self.entry, int) and self.entry > 0xFFFF:
            raise FieldError(("entry",), f"real16 entry {self.entry:#x} is not reachable with CS = 0 "
                             "(at most 0xffff)")
        if self.source is not None:
            self._source_path = _find_file(self.source, base, ("source",), "guest source")
        return self

    def _multiboot_kernel(self, base: Path | None) -> "Guest":
        """Mode-less: the handoff is prot32's state; the kernel and modules are read and checked
        now (so `check` refuses what `run` would), their placement in memory by the Scenario."""
        if self.mode != "prot32":
            raise FieldError(("mode",), f"a multiboot kernel starts in 32-bit protected mode (the multiboot "
                             f"handoff); leave mode out or write prot32, not {self.mode}")
        for name in ("defsym", "load", "entry"):
            if name in self.model_fields_set:
                raise FieldError((name,), f"{name} is for assembled guests; a multiboot kernel's ELF headers "
                                 "give its load addresses and entry")
        if self.cmdline is not None and "\0" in self.cmdline:
            raise FieldError(("cmdline",), "the command line is a C string: no NUL characters")
        path = _find_file(self.multiboot, base, ("multiboot",), "multiboot kernel")
        data = _read_bounded(path, MAX_KERNEL_BYTES, ("multiboot",), "multiboot kernel")
        try:
            self._kernel = parse_kernel(data)
        except MultibootError as e:
            raise FieldError(("multiboot",), f"{self.multiboot}: {e.msg}") from None
        self._source_path = path
        self._module_paths = []
        for i, m in enumerate(self.modules):
            mp = _find_file(m, base, ("modules", i), "module")
            if mp.stat().st_size > MAX_MODULE_BYTES:
                raise FieldError(("modules", i), f"module {m!r} is larger than kvmsim loads ({MAX_MODULE_BYTES:#x} "
                                 "bytes)")
            self._module_paths.append(mp)
        return self

    @property
    def source_path(self) -> Path | None:
        """The resolved guest source file, or the multiboot kernel (None for inline asm)."""
        return self._source_path

    @property
    def kernel(self) -> MultibootKernel | None:
        """The parsed multiboot kernel (None for an assembled guest)."""
        return self._kernel

    @property
    def module_paths(self) -> list[Path]:
        """The resolved multiboot module files, in order."""
        return list(self._module_paths)

    def multiboot_cmdline(self) -> bytes:
        """The info block's command line: '<kernel as written> <cmdline>', as QEMU builds it."""
        return f"{self.multiboot} {self.cmdline or ''}".encode()

    def multiboot_strings_size(self) -> int:
        """Bytes of the strings in the multiboot buffer (command line and module names, NULs included)."""
        return len(self.multiboot_cmdline()) + 1 + sum(len(m.encode()) + 1 for m in self.modules)


def _find_file(name: str, base: Path | None, loc: tuple[str | int, ...], what: str) -> Path:
    cands = guest_source_candidates(name, base)
    found = next((c for c in cands if c.is_file()), None)
    if found is None:
        looked = ", ".join(str(c) for c in cands[:3])
        raise FieldError(loc, f"{what} {name!r} not found (looked for {looked})")
    return found.resolve()


def _read_bounded(path: Path, limit: int, loc: tuple[str | int, ...], what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise FieldError(loc, f"cannot read the {what} {str(path)!r}: {e.strerror or e}") from None
    if len(data) > limit:
        raise FieldError(loc, f"the {what} is larger than kvmsim loads ({limit:#x} bytes)")
    return data


# ---------------------------------------------------------------- memory and devices

# Not KVM's: both backends back every slot with host memory, so the scenario's RAM is bounded.
# (What KVM_SET_USER_MEMORY_REGION refuses is kvmsim/kvm/memslot.py's, asked by Scenario._check_memory.)
MAX_SCENARIO_RAM = 4 << 30
VMM_USERSPACE_ADDR = 0x1000_0000
# A multiboot scenario's default RAM: QEMU's default -m (128 MiB, mem_upper 127 MiB), what
# kvm-unit-tests' images (linked at 4 MiB, ~16 MiB with their bss) run in.
MULTIBOOT_DEFAULT_RAM = 128 << 20   # where the checks suppose the VMM maps slot 0, the others after it


class Memslot(_Model):
    """One KVM_SET_USER_MEMORY_REGION slot of RAM; guest-physical space outside every slot is MMIO."""

    gpa: U64
    size: Size
    readonly: bool = Field(False, description="KVM_MEM_READONLY: a ROM; reads are RAM, writes exit as MMIO")
    log_dirty: bool = Field(False, description="KVM_MEM_LOG_DIRTY_PAGES: after the run the VMM reads "
                            "KVM_GET_DIRTY_LOG (result and expect: dirty_log)")


class _Device(_Model):
    name: str | None = Field(None, description="name used by expect.devices; default: the type "
                                               "(or type@address when the type appears twice)")

    def address(self) -> int:
        return getattr(self, "port", None) if getattr(self, "port", None) is not None else getattr(self, "gpa", 0)


class Serial16550(_Device):
    """A 16550 UART (transmit only matters): bytes written to THR become `serial` output."""

    type: Literal["serial16550"]
    port: U16 = 0x3F8


class DebugExit(_Device):
    """isa-debug-exit style port: a write stops the VMM with stop.reason debug-exit, code = value."""

    type: Literal["debug-exit"]
    port: U16 = 0xF4
    size: IoSize = 4


MAX_REGBANK = 1 << 20  # not KVM's: the VMM keeps a regbank's bytes in host memory


class RegBank(_Device):
    """A bank of MMIO registers at gpa: reads return `values` (offset -> value), writes are stored."""

    type: Literal["regbank"]
    gpa: U64
    size: Size = 0x1000
    values: dict[U64, U64] = Field(default_factory=dict)
    width: AccessLen = 4

    @model_validator(mode="after")
    def _offsets_inside(self) -> "RegBank":
        if self.size > MAX_REGBANK:
            raise FieldError(("size",), f"regbank size {self.size:#x} is more than kvmsim keeps in memory "
                             f"({MAX_REGBANK:#x})")
        for off in self.values:
            if off >= self.size:
                raise FieldError(("values", off), f"offset {off:#x} is outside the bank (size {self.size:#x})")
        return self


class TestReport(_Device):
    """kvm-unit-tests style report port: the guest writes pass/fail results."""

    __test__ = False  # not a pytest class
    type: Literal["test-report"]
    port: U16


class PortValue(_Device):
    """An I/O port that returns a fixed value on IN and ignores OUT."""

    type: Literal["port-value"]
    port: U16
    size: IoSize = 1
    value: U32


class Ioeventfd(_Device):
    """KVM_IOEVENTFD: an in-kernel write sink on an MMIO address or a port (len 0 = any length)."""

    type: Literal["ioeventfd"]
    gpa: U64 | None = None
    port: U16 | None = None
    len: Annotated[int, BeforeValidator(parse_int), _one_of(0, 1, 2, 4, 8), _INT_JSON]
    datamatch: U64 | None = None

    @model_validator(mode="after")
    def _gpa_or_port(self) -> "Ioeventfd":
        if (self.gpa is None) == (self.port is None):
            raise ValueError("give exactly one of 'gpa' (MMIO) or 'port' (PIO)")
        if self.len == 0 and self.datamatch is not None:  # kvm_assign_ioeventfd
            raise FieldError(("datamatch",), "datamatch needs a non-zero len (KVM_IOEVENTFD: EINVAL)")
        return self


class CoalescedMmio(_Device):
    """KVM_REGISTER_COALESCED_MMIO zone: writes are queued in the ring, no exit."""

    type: Literal["coalesced-mmio"]
    gpa: U64
    size: Size


MAX_SEQUENCE = 4096  # not KVM's: the values a sequence device keeps in host memory


class _Sequence(_Device):
    """A register answering `values` in order, one per read; then `after`: hold the last value or
    repeat from the first.  Writes are counted and the last one kept (expect.devices: reads,
    writes, last_write)."""

    values: list[U64] = Field(min_length=1, max_length=MAX_SEQUENCE)
    after: Literal["hold", "repeat"] = "hold"

    @model_validator(mode="after")
    def _values_fit(self) -> "_Sequence":
        for i, v in enumerate(self.values):
            if v >> (8 * self.size):  # type: ignore[attr-defined]
                raise FieldError(("values", i), f"value {v:#x} is wider than the register "
                                 f"({self.size} byte{'s' if self.size > 1 else ''})")  # type: ignore[attr-defined]
        return self


class PortSequence(_Sequence):
    """An I/O port that answers `values` in order (a status register reading busy, busy, ready)."""

    type: Literal["port-sequence"]
    port: U16
    size: IoSize = 1

    @model_validator(mode="after")
    def _inside_port_space(self) -> "PortSequence":
        if self.port + self.size > 0x10000:
            raise FieldError(("port",), f"port {self.port:#x}+{self.size} runs past port 0xffff")
        return self


class MmioSequence(_Sequence):
    """An MMIO register that answers `values` in order."""

    type: Literal["mmio-sequence"]
    gpa: U64
    size: AccessLen = 4


MAX_PYDEVICE_SPAN = 1 << 32  # not KVM's: a bound on the MMIO range one Python device claims


class PythonDevice(_Device):
    """A device written in Python (`class: "module:Class"`, vmm/devices/python.py has the protocol):
    the module is imported relative to the scenario's directory, then sys.path, when the file is
    loaded; the class is built with `args` as keyword arguments at load time (check) and again
    for each run."""

    type: Literal["python"]
    class_: str = Field(alias="class", description="'module:Class'; module relative to the YAML file's "
                        "directory, or on sys.path")
    port: U16 | None = None
    gpa: U64 | None = None
    size: Size | None = Field(None, description="ports or bytes claimed; default 1 (port) or 0x1000 (gpa)")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the class")

    _cls: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _load_class(self, info: ValidationInfo) -> "PythonDevice":
        if (self.gpa is None) == (self.port is None):
            raise ValueError("give exactly one of 'gpa' (MMIO) or 'port' (PIO)")
        if self.size is None:
            self.size = 1 if self.port is not None else 0x1000
        if self.port is not None and self.port + self.size > 0x10000:
            raise FieldError(("size",), f"ports {self.port:#x}+{self.size:#x} run past port 0xffff")
        if self.gpa is not None and self.size > MAX_PYDEVICE_SPAN:
            raise FieldError(("size",), f"size {self.size:#x} is more than one Python device may claim "
                             f"({MAX_PYDEVICE_SPAN:#x})")
        base = (info.context or {}).get("base_dir")
        try:
            self._cls = load_device_class(self.class_, Path(base) if base is not None else None, self.args)
        except DeviceClassError as e:
            raise FieldError(("class",) if e.field == "class" else ("args",), str(e)) from None
        return self

    @property
    def device_class(self) -> Any:
        """The user's class, imported and checked against the protocol at load time."""
        return self._cls


# ---------------------------------------------------------------- the platform QEMU gives kvm-unit-tests

MAX_CPUS = 288   # not KVM's limit: KVM_MAX_VCPUS is larger; QEMU's pc machine takes 288 (-smp maxcpus)


class FwCfg(_Device):
    """QEMU's fw_cfg (vmm/devices/fw_cfg.py): selector port 0x510 (16-bit OUT), data port 0x511
    (byte INs through the selected item).  Items: signature "QEMU", ID, UUID, RAM_SIZE, NB_CPUS,
    MAX_CPUS, NOGRAPHIC, BOOT_MENU, IRQ0_OVERRIDE."""

    type: Literal["fw-cfg"]
    port: U16 = Field(0x510, description="selector; the data port is port + 1")
    nb_cpus: Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=MAX_CPUS), _INT_JSON] = Field(
        1, description="FW_CFG_NB_CPUS: the CPUs booted")
    max_cpus: Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=MAX_CPUS), _INT_JSON] | None = Field(
        None, description="FW_CFG_MAX_CPUS; default nb_cpus")
    ram_size: Size | None = Field(None, description="FW_CFG_RAM_SIZE; default: the RAM of the writable memslots")

    @model_validator(mode="after")
    def _cpus(self) -> "FwCfg":
        if self.port + 2 > 0x10000:
            raise FieldError(("port",), f"ports {self.port:#x}+2 run past port 0xffff")
        if self.max_cpus is not None and self.max_cpus < self.nb_cpus:
            raise FieldError(("max_cpus",), f"max_cpus {self.max_cpus} is less than nb_cpus {self.nb_cpus} "
                             "(QEMU: -smp: maxcpus must be equal to or greater than smp)")
        return self


class PcTestdev(_Device):
    """QEMU's pc-testdev (vmm/devices/testdev.py), at its fixed addresses: the latch at port 0xe0
    (and 0xe8), flush at 0xe4, ISA IRQ lines at ports 0x2000-0x2017, 64 KiB IORAM at 0xff000000."""

    type: Literal["pc-testdev"]


class IsaDebugExit(_Device):
    """QEMU's isa-debug-exit: a write ends the run with stop.reason isa-debug-exit and code
    (value << 1) | 1, the exit status QEMU gives.  kvm-unit-tests' -device isa-debug-exit,iobase=0xf4,iosize=0x4."""

    type: Literal["isa-debug-exit"]
    iobase: U16 = 0xF4
    iosize: Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=0x10000), _INT_JSON] = 4

    @model_validator(mode="after")
    def _inside_port_space(self) -> "IsaDebugExit":
        if self.iobase + self.iosize > 0x10000:
            raise FieldError(("iosize",), f"ports {self.iobase:#x}+{self.iosize:#x} run past port 0xffff")
        return self


class BochsShutdown(_Device):
    """The Bochs power-off port: "Shutdown" written a byte at a time ends the run (stop.reason
    bochs-shutdown); kvm-unit-tests' exit() falls back to it."""

    type: Literal["bochs-shutdown"]
    port: U16 = 0x8900


class AcpiPmTimer(_Device):
    """The ACPI PM timer: a 24-bit count at 3.579545 MHz of the machine's virtual time (retired guest
    instructions on the sim, 1 ns each; the host clock on /dev/kvm)."""

    type: Literal["acpi-pm-timer"]
    port: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFC), _INT_JSON] = Field(
        0xB008, description="pm_tmr_blk (QEMU pc: PIIX4 PM base 0xb000 + 8); 4 ports")


class AcpiTables(_Device):
    """RSDP, RSDT, FADT (pm_tmr_blk = the acpi-pm-timer's port, 0 without one), FACS and an empty
    DSDT, written into guest RAM at boot (vmm/acpi.py), the RSDP at `rsdp`."""

    type: Literal["acpi-tables"]
    rsdp: U64 = Field(0xF0000, description="the RSDP's GPA: 16-byte aligned in 0xe0000-0xfffff, where "
                      "the guest scans for it; the other tables follow it")

    @model_validator(mode="after")
    def _in_bios_area(self) -> "AcpiTables":
        if self.rsdp % 16:
            raise FieldError(("rsdp",), f"rsdp {self.rsdp:#x} is not 16-byte aligned (the RSDP scan steps 16 bytes)")
        end = self.rsdp + acpi_tables_size(self.rsdp)
        if self.rsdp < RSDP_SCAN_START or end > RSDP_SCAN_END:
            raise FieldError(("rsdp",), f"tables at {self.rsdp:#x}+{end - self.rsdp:#x} are not inside "
                             f"{RSDP_SCAN_START:#x}-{RSDP_SCAN_END - 1:#x}, where the guest scans for the RSDP")
        return self


BIOS_IRQ_HANDLERS = 0xFE000     # F000:E000, above the default ACPI tables at 0xf0000


BIOS_IRQ_STUB_MAX = 0x100       # bytes the handler stub may take


class BiosIrq(_Device):
    """What a PC BIOS (SeaBIOS) leaves for hardware interrupts when it boots the guest: the in-kernel
    PIC initialised with vectors 0x08 (master) and 0x70 (slave), the slave cascaded on IRQ2, IRQ0 the
    only line unmasked, IRQ10/11 level-triggered (the PIIX PCI lines); PIT channel 0 in mode 2 with
    count 0 (18.2 Hz); and real-mode IVT entries for vectors 0x08-0x0f and 0x70-0x77 pointing at handlers
    (vmm/bios_irq.S, at `handlers`) that send the EOI and IRET.  Needs kvm.irqchip and kvm.pit."""

    type: Literal["bios-irq"]
    handlers: U64 = Field(BIOS_IRQ_HANDLERS, description="GPA of the handler stub (below 1 MiB, in RAM)")


Device = Annotated[Union[Serial16550, DebugExit, RegBank, TestReport, PortValue, Ioeventfd, CoalescedMmio,
                         PortSequence, MmioSequence, PythonDevice, FwCfg, PcTestdev, IsaDebugExit, BochsShutdown,
                         AcpiPmTimer, AcpiTables, BiosIrq],
                   Field(discriminator="type")]
DEVICE_TYPES = ("serial16550", "debug-exit", "regbank", "test-report", "port-value", "ioeventfd", "coalesced-mmio",
                "port-sequence", "mmio-sequence", "python", "fw-cfg", "pc-testdev", "isa-debug-exit", "bochs-shutdown",
                "acpi-pm-timer", "acpi-tables", "bios-irq")


_FIXED_SPAN = {"serial16550": 8, "test-report": 4, "fw-cfg": 2, "bochs-shutdown": 1,
               "acpi-pm-timer": 4}  # the VMM device's own size (vmm/devices)
# Devices at fixed addresses on more than one range (vmm/devices/testdev.py regions()).
_FIXED_CLAIMS = {"pc-testdev": [("pio", "type", TESTDEV_PORT, TESTDEV_PORT_SPAN), ("pio", "type", IRQ_PORT, IRQ_LINES),
                                ("mmio", "type", IORAM_BASE, IORAM_LEN)]}


def _vmm_span(d: Any) -> int:
    """Bytes of port or MMIO space a device claims on the VMM's bus."""
    return _FIXED_SPAN.get(d.type) or getattr(d, "size", None) or getattr(d, "len", 0) or 1


def _claims(d: Any) -> list[tuple[str, str, int, int]]:
    """(bus, field naming the address, base, size) of every range a device takes on the VMM's buses;
    none for the in-kernel ones (ioeventfd, coalesced MMIO) and for tables in RAM."""
    if d.type in ("ioeventfd", "coalesced-mmio", "acpi-tables", "bios-irq"):
        return []
    if d.type in _FIXED_CLAIMS:
        return _FIXED_CLAIMS[d.type]
    if d.type == "isa-debug-exit":
        return [("pio", "iobase", d.iobase, d.iosize)]
    if getattr(d, "gpa", None) is not None:
        return [("mmio", "gpa", d.gpa, _vmm_span(d))]
    return [("pio", "port", d.port, _vmm_span(d))]


def default_devices() -> list:
    return [Serial16550(type="serial16550"), DebugExit(type="debug-exit")]


# ---------------------------------------------------------------- boot page tables

USER_PAGE = 2 << 20          # vmm/boot.py maps 0-4 GiB with 2 MiB pages: U/S is per 2 MiB page
IDENTITY_MAP_END = 4 << 30


class UserRange(_Model):
    """Guest addresses (identity-mapped: also the GPAs) whose pages get U/S=1, so CPL3 may use them."""

    addr: Annotated[int, BeforeValidator(parse_size), Field(ge=0, lt=1 << 64), _SIZE_JSON]  # 0x400000 or 4M
    size: Size

    @model_validator(mode="after")
    def _whole_pages_inside_the_map(self) -> "UserRange":
        for name, v in (("addr", self.addr), ("size", self.size)):
            if v % USER_PAGE:
                raise FieldError((name,), f"{name} {v:#x} is not a multiple of 2 MiB (the boot page tables "
                                 "map with 2 MiB pages, so U/S=1 is set a 2 MiB page at a time)")
        if self.addr + self.size > IDENTITY_MAP_END:
            raise FieldError(("size",), f"{self.addr:#x}+{self.size:#x} runs past 4 GiB, the end of the boot "
                             "page tables' identity map")
        return self


class Paging(_Model):
    """The boot page tables (long64): which ranges user mode (CPL3) may access."""

    user: list[UserRange] = Field(default_factory=list, description="ranges marked U/S=1 at every level")

    @model_validator(mode="after")
    def _no_overlap(self) -> "Paging":
        for i, r in enumerate(self.user):
            for j, o in enumerate(self.user[:i]):
                if r.addr < o.addr + o.size and o.addr < r.addr + r.size:
                    raise FieldError(("user", i), f"{r.addr:#x}+{r.size:#x} overlaps user[{j}] "
                                     f"{o.addr:#x}+{o.size:#x}")
        return self


# ---------------------------------------------------------------- kvm module parameters

class CpuidOverride(_Model):
    function: U32
    index: U32 = 0
    eax: U32 | None = None
    ebx: U32 | None = None
    ecx: U32 | None = None
    edx: U32 | None = None


KVM_MAX_CPUID_ENTRIES = 256  # KVM_SET_CPUID2 with more: E2BIG


class CpuidEntry(_Model):
    """One kvm_cpuid_entry2 of a replacing table; registers left out are 0.  The flag
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX is set by leaf, as QEMU and the kernel do (vmm/cpuid.py)."""

    function: U32
    index: U32 = 0
    eax: U32 = 0
    ebx: U32 = 0
    ecx: U32 = 0
    edx: U32 = 0


class CpuidTable(_Model):
    """`kvm.cpuid: {replace: true, entries: [...]}`: KVM_SET_CPUID2 with exactly these entries
    (replace: false means the entries override leaves of the default table, as the list form)."""

    replace: bool
    entries: list[CpuidEntry] = Field(max_length=KVM_MAX_CPUID_ENTRIES)

    @model_validator(mode="after")
    def _as_kvm_checks_it(self) -> "CpuidTable":
        seen: dict[tuple[int, int], int] = {}
        for i, e in enumerate(self.entries):
            if e.index and not cpuid_function_is_indexed(e.function):
                raise FieldError(("entries", i, "index"), f"leaf {e.function:#x} has no subleaves (KVM answers "
                                 "it for any ECX), so its index must be 0")
            if (e.function, e.index) in seen:
                raise FieldError(("entries", i), f"leaf {e.function:#x} index {e.index:#x} is already "
                                 f"entries[{seen[e.function, e.index]}]")
            seen[e.function, e.index] = i
            # kvm_check_cpuid: the guest's virtual-address width must be one KVM can run.
            if e.function == 0x80000008 and self.replace and (e.eax >> 8 & 0xFF) not in (0, 48, 57):
                raise FieldError(("entries", i, "eax"), f"leaf 0x80000008 EAX[15:8] = {e.eax >> 8 & 0xff} "
                                 "virtual-address bits; KVM_SET_CPUID2 takes 0, 48 or 57 (KVM: EINVAL)")
        return self


def _cpuid_form(v: Any) -> str:
    """kvm.cpuid is a list of overrides or a {replace, entries} mapping; anything else: the list's error."""
    return "table" if isinstance(v, (dict, CpuidTable)) else "list"


def _version_text(v: Any) -> Any:
    # YAML reads `version: 6.10` as the float 6.1; the loader keeps the text it was written as.
    if isinstance(v, float):
        return getattr(v, "yaml_text", repr(v))
    return v


class Emulator(_Model):
    version: Annotated[str, BeforeValidator(_version_text)] = Field("6.18", pattern=r"^\d+\.\d+$")
    vex_moves: bool = False


class Kvm(_Model):
    """kvm / kvm_intel module parameters and VM capabilities."""

    enable_ept: bool = True
    unrestricted_guest: bool = True
    emulate_invalid_guest_state: bool = Field(True, description="kvm_intel.emulate_invalid_guest_state: "
                                              "without unrestricted_guest, emulate while the state is invalid")
    force_emulation_prefix: bool = False
    enable_vmware_backdoor: bool = False
    host_is_hypervisor: bool = False
    mmio_caching: bool = True
    user_space_msr: list[Literal["unknown", "inval", "filter"]] = Field(default_factory=list)
    exit_on_emulation_failure: bool = False
    irqchip: bool = Field(False, description="KVM_CREATE_IRQCHIP: the in-kernel local APIC (xAPIC page, "
                          "x2APIC MSRs, timer, interrupt delivery) and PIC pair (ports 0x20/0xa0, ELCR 0x4d0)")
    pit: bool = Field(False, description="KVM_CREATE_PIT2 (needs irqchip): the in-kernel 8254 at ports 0x40-0x43, "
                      "channel 0 on IRQ0")
    emulator: Emulator = Field(default_factory=Emulator)
    cpuid: Annotated[Union[Annotated[list[CpuidOverride], Tag("list")], Annotated[CpuidTable, Tag("table")]],
                     Discriminator(_cpuid_form)] = Field(
        default_factory=list, description="a list: leaves overridden on the default table; "
        "{replace: true, entries: [...]}: the whole table KVM_SET_CPUID2 gets")
    msrs: dict[U32, U64] = Field(default_factory=dict)
    # issue 14 (handlers): kvm_intel PAUSE-loop exiting, the MWAIT quirk, bus-lock and notify exits
    ple_gap: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFF_FFFF), _INT_JSON] = 128
    ple_window: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFF_FFFF), _INT_JSON] = 4096
    ple_window_grow: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFF_FFFF), _INT_JSON] = 2
    ple_window_shrink: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFF_FFFF), _INT_JSON] = 0
    ple_window_max: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFF_FFFF), _INT_JSON] = 0xFFFF_FFFF
    quirk_mwait_never_ud_faults: bool = Field(True, description="KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS: "
                                              "MONITOR/MWAIT are NOPs; false: #UD without CPUID.MONITOR")
    bus_lock_exit: bool = Field(False, description="KVM_CAP_X86_BUS_LOCK_EXIT(KVM_BUS_LOCK_DETECTION_EXIT): "
                                "a split lock exits to userspace as KVM_EXIT_X86_BUS_LOCK")

    @property
    def cpuid_replaced(self) -> bool:
        return isinstance(self.cpuid, CpuidTable) and self.cpuid.replace

    @property
    def cpuid_overrides(self) -> list[Any]:
        """The override entries (list form, or a table with replace: false)."""
        return list(self.cpuid.entries) if isinstance(self.cpuid, CpuidTable) else self.cpuid


Policy = Literal["ignore", "log", "stop"]


class Userspace(_Model):
    """How the userspace VMM answers exits nothing claims."""

    msr: dict[U32, U64] = Field(default_factory=dict, description="KVM_EXIT_X86_RDMSR answers")
    unclaimed_io: Policy = "ignore"
    unclaimed_mmio: Policy = "ignore"


# ---------------------------------------------------------------- events and limits

class EventAt(_Model):
    exit: Count | None = Field(None, description="after the Nth VM exit")
    userspace_exit: Count | None = Field(None, description="after the Nth exit to userspace")

    @model_validator(mode="after")
    def _exactly_one(self) -> "EventAt":
        if (self.exit is None) == (self.userspace_exit is None):
            raise ValueError("give exactly one of 'exit' or 'userspace_exit'")
        return self


class EventEvery(_Model):
    guest_insns: Annotated[int, BeforeValidator(parse_int), Field(gt=0), _INT_JSON]


class InjectIrq(_Model):
    irq: U8


def _inject_tag(v: Any) -> str | None:
    return "nmi" if isinstance(v, str) else "irq" if isinstance(v, (dict, InjectIrq)) else None


Inject = Annotated[Union[Annotated[Literal["nmi"], Tag("nmi")], Annotated[InjectIrq, Tag("irq")]],
                   Discriminator(_inject_tag, custom_error_type="inject",
                                 custom_error_message="inject must be 'nmi' or {irq: VECTOR}")]


class Event(_Model):
    """Something userspace (inject: KVM_NMI / KVM_INTERRUPT) or the host (host: nmi) does mid-run."""

    at: EventAt | None = None
    every: EventEvery | None = None
    inject: Inject | None = None
    host: Literal["nmi", "tick"] | None = Field(None, description="a host NMI (EXCEPTION_NMI exit) or host timer "
                                                "tick (EXTERNAL_INTERRUPT exit) arrives, not for the guest")

    @model_validator(mode="after")
    def _when_and_what(self) -> "Event":
        if (self.at is None) == (self.every is None):
            raise ValueError("give exactly one of 'at' or 'every'")
        if (self.inject is None) == (self.host is None):
            raise ValueError("give exactly one of 'inject' or 'host'")
        if self.at is not None and self.host is not None:
            raise ValueError("'at' goes with inject: nmi or {irq: N} (a host NMI is 'every: {guest_insns: N}, "
                             "host: nmi')")
        if self.every is not None and self.inject is not None:
            raise ValueError("'every' goes with host: nmi or host: tick")
        return self


# Upper bounds of the limits: far above any useful run, and inside what the machinery takes
# (unicorn's size_t count, threading.Timer's timestamps; `.inf` or 1e20 seconds overflow them).
MAX_EXITS_BOUND = 10**12
MAX_GUEST_INSNS_BOUND = 10**15
WALL_SECONDS_BOUND = 1_000_000.0
# A runaway guest stops here by instruction count, deterministically: ~3 s at the sim's counted
# speed (~16 M insns/s native code, 2 cores).  The busiest shipped scenario retires 408,042 (nmi).
DEFAULT_MAX_GUEST_INSNS = 50_000_000
LimitCount = Annotated[int, BeforeValidator(parse_int), _INT_JSON]


class Limits(_Model):
    """When a run stops if the guest does not stop by itself (each a `limit` stop naming it)."""

    max_exits: LimitCount = Field(100_000, gt=0, le=MAX_EXITS_BOUND, description="exits to userspace")
    max_guest_insns: LimitCount | None = Field(
        DEFAULT_MAX_GUEST_INSNS, gt=0, le=MAX_GUEST_INSNS_BOUND,
        description="stop after this many retired guest instructions (sim); null: not counted, "
                    "for native speed (counting slows native code ~100x)")
    wall_seconds: float = Field(30, gt=0, le=WALL_SECONDS_BOUND, allow_inf_nan=False,
                                description="wall-clock seconds")


# ---------------------------------------------------------------- expectations

StopReason = Literal["debug-exit", "shutdown", "internal-error", "hlt", "fail-entry", "limit",
                     "mmio-unclaimed", "io-unclaimed", "exception", "device-error", "isa-debug-exit",
                     "bochs-shutdown"]


def parse_suberror(v: Any) -> int:
    """KVM_INTERNAL_ERROR_* as a number or a name ('EMULATION', 'KVM_INTERNAL_ERROR_DELIVERY_EV')."""
    if isinstance(v, str) and not v.strip()[:1].isdigit():
        name = v.strip().upper().removeprefix("KVM_INTERNAL_ERROR_")
        if name in KvmInternalError.__members__:
            return int(KvmInternalError[name])
        raise ValueError(f"unknown suberror {v!r} (one of {', '.join(KvmInternalError.__members__)})")
    return parse_int(v)


Suberror = Annotated[int, BeforeValidator(parse_suberror), Field(ge=0, le=0xFFFF_FFFF), _INT_JSON]


class ExpectStop(_Model):
    reason: StopReason
    code: U64 | None = None
    suberror: Suberror | None = None


class ExpIo(_Model):
    port: U16 | None = None
    size: IoSize | None = None
    direction: Literal["in", "out"] | None = None
    count: Count | None = None
    data: Data | None = None


# kvm_run.mmio.len is 1..8: a page-crossing access exits with the two halves (e.g. 3 + 5).
MmioLen = Annotated[int, BeforeValidator(parse_int), Field(ge=1, le=8), _INT_JSON]


class ExpMmio(_Model):
    gpa: U64 | None = None
    len: MmioLen | None = None
    write: bool | None = None
    data: Data | None = None


class ExpNone(_Model):
    pass


class ExpInternal(_Model):
    suberror: Suberror | None = None
    ndata: Count | None = None
    data: list[U64] | None = None


class ExpRdmsr(_Model):
    index: U32 | None = None


class ExpWrmsr(_Model):
    index: U32 | None = None
    data: U64 | None = None


class ExpHypercall(_Model):
    nr: U64 | None = None


class ExpIrqWindowOpen(_Model):
    """KVM_EXIT_IRQ_WINDOW_OPEN (issue 14): kvm_run's if_flag and ready_for_interrupt_injection."""

    if_flag: Annotated[int, Field(ge=0, le=1)] | None = None
    ready: Annotated[int, Field(ge=0, le=1)] | None = None


class ExpDebug(_Model):
    """KVM_EXIT_DEBUG (issue 14): run->debug.arch."""

    exception: U8 | None = None
    pc: U64 | None = None
    dr6: U64 | None = None
    dr7: U64 | None = None


USERSPACE_KINDS = ("io", "mmio", "hlt", "shutdown", "internal", "rdmsr", "wrmsr", "hypercall",
                   "irq_window_open", "debug")


class ExpectUserspaceExit(_Model):
    """One expected exit to userspace; exactly one key. Omitted fields are not compared."""

    io: ExpIo | None = None
    mmio: ExpMmio | None = None
    hlt: ExpNone | None = None
    shutdown: ExpNone | None = None
    internal: ExpInternal | None = None
    rdmsr: ExpRdmsr | None = None
    wrmsr: ExpWrmsr | None = None
    hypercall: ExpHypercall | None = None
    irq_window_open: ExpIrqWindowOpen | None = None
    debug: ExpDebug | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str) and v in USERSPACE_KINDS:      # `- hlt` means {hlt: {}}
            return {v: {}}
        if isinstance(v, dict):
            return {k: ({} if val is None else val) for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> "ExpectUserspaceExit":
        if len(set(self.model_fields_set)) != 1:
            raise ValueError(f"each userspace exit needs exactly one of: {', '.join(USERSPACE_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(iter(self.model_fields_set))

    @property
    def fields(self) -> dict[str, Any]:
        """The fields to compare (those given)."""
        sub = getattr(self, self.kind)
        return {k: getattr(sub, k) for k in type(sub).model_fields
                if k in sub.model_fields_set and getattr(sub, k) is not None}


# x86 EMULTYPE_* (arch/x86/include/asm/kvm_host.h); reference §6.1.
EMULTYPE_BITS: dict[str, int] = {
    "NO_DECODE": 1 << 0, "TRAP_UD": 1 << 1, "SKIP": 1 << 2, "ALLOW_RETRY_PF": 1 << 3,
    "TRAP_UD_FORCED": 1 << 4, "VMWARE_GP": 1 << 5, "PF": 1 << 6, "COMPLETE_USER_EXIT": 1 << 7,
    "WRITE_PF_TO_SP": 1 << 8, "SKIP_SOFT_INT": 1 << 9,
}


def emultype_key(v: Any) -> str:
    """Canonical emulation-type key: names without EMULTYPE_, in bit order, joined by '|'; '0' for none.

    Accepts 'PF|ALLOW_RETRY_PF', 'EMULTYPE_PF', 0, 0x48, '0x48', 'EmulType.PF|ALLOW_RETRY_PF'.
    """
    if isinstance(v, int) and not isinstance(v, bool):
        bits = v
    elif isinstance(v, str) and re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*", v):
        bits = int(v, 0)
    elif isinstance(v, str):
        bits = 0
        for part in re.split(r"\s*\|\s*", v.strip()):
            name = part.upper().split(".")[-1].removeprefix("EMULTYPE_")
            if name not in EMULTYPE_BITS:
                import difflib
                near = difflib.get_close_matches(name, EMULTYPE_BITS, 1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(f"unknown emulation type {part!r}{hint}; known: {', '.join(EMULTYPE_BITS)}")
            bits |= EMULTYPE_BITS[name]
    else:
        raise ValueError(f"expected an EMULTYPE name like 'PF' or 'PF|ALLOW_RETRY_PF', got {v!r}")
    names = [n for n, b in sorted(EMULTYPE_BITS.items(), key=lambda kv: kv[1]) if bits & b]
    if bits & ~sum(EMULTYPE_BITS.values()):
        raise ValueError(f"unknown EMULTYPE bits in {v!r}")
    return "|".join(names) if names else "0"


@lru_cache(maxsize=1)
def _vmx_exit_reason_names() -> frozenset[str] | None:
    try:
        from kvmsim.hw.vmcs import VMX_EXIT_REASON_NAMES  # provided by the lead
    except ImportError:
        return None
    return frozenset(VMX_EXIT_REASON_NAMES)


def known_exit_reason(name: str) -> str:
    """Validate a VMX exit reason name (EXIT_REASON_* without the prefix); return it canonical."""
    if not isinstance(name, str):
        raise ValueError(f"expected a VMX exit reason name like 'EPT_VIOLATION', got {name!r}")
    canon = name.strip().upper().removeprefix("EXIT_REASON_")
    names = _vmx_exit_reason_names()
    if names is None:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", canon):
            raise ValueError(f"not a VMX exit reason name: {name!r}")
        return canon
    if canon not in names:
        import difflib
        near = difflib.get_close_matches(canon, sorted(names), 1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown VMX exit reason {name!r}{hint}")
    return canon


REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")
SREG_NAMES = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")


def known_reg(name: Any) -> str:
    canon = str(name).strip().lower()
    if canon not in REG_NAMES + SREG_NAMES:
        import difflib
        near = difflib.get_close_matches(canon, REG_NAMES + SREG_NAMES, 1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown register {name!r}{hint}")
    return canon


class ExpectMemory(_Model):
    gpa: U64
    bytes: HexBytes


class ExpectException(_Model):
    vector: Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=31), _INT_JSON]
    error_code: U32 | None = None


class Expect(_Model):
    """What the run must show. Sections left out are not checked."""

    stop: ExpectStop | None = None
    exits: dict[Annotated[str, BeforeValidator(known_exit_reason)], Count] | None = Field(
        None, description="VMX exit counts by EXIT_REASON name; only listed reasons are compared")
    userspace: list[ExpectUserspaceExit] | None = None
    userspace_mode: Literal["exact", "prefix", "subsequence"] = "exact"
    emulation: dict[Annotated[str, BeforeValidator(emultype_key)], Count] | None = Field(
        None, description="x86_emulate_instruction calls by EMULTYPE; only listed types are compared")
    serial: str | None = None
    serial_contains: str | None = None
    regs: dict[Annotated[str, BeforeValidator(known_reg)], U64] | None = None
    memory: list[ExpectMemory] | None = None
    devices: dict[str, dict[str, U64]] | None = None
    exceptions: list[ExpectException] | None = None
    dirty_log: dict[Count, list[U64]] | None = Field(
        None, description="memslot index -> the GPAs of the pages KVM_GET_DIRTY_LOG reports after the run")


# ---------------------------------------------------------------- initial vCPU state and the VMM

def parse_bit(v: Any) -> int:
    """A one-bit descriptor field: 0/1 or false/true."""
    if isinstance(v, bool):
        return int(v)
    return parse_int(v)


Bit = Annotated[int, BeforeValidator(parse_bit), Field(ge=0, le=1), _INT_JSON]
U4 = Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=15), _INT_JSON]
U2 = Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=3), _INT_JSON]


class SegmentState(_Model):
    """A struct kvm_segment override; omitted fields keep what the mode's boot set-up chose.
    `limit` is byte-granular as KVM reports it (0xffffffff for a flat g=1 segment); the segment
    is unusable exactly when it is not present (as VMX's access-rights byte)."""

    selector: U16 | None = None
    base: U64 | None = None
    limit: U32 | None = None
    type: U4 | None = None
    present: Bit | None = None
    dpl: U2 | None = None
    db: Bit | None = None
    s: Bit | None = None
    l: Bit | None = None  # noqa: E741 - struct kvm_segment's name
    g: Bit | None = None
    avl: Bit | None = None


class DtableState(_Model):
    """struct kvm_dtable (GDTR / IDTR); omitted fields keep the boot value."""

    base: U64 | None = None
    limit: U16 | None = None


# Architectural bits (SDM vol. 3 2.5, 2.2.1, 2.3): what `vcpu:` accepts at all.
_CR0_BITS = 0xE005003F            # PE MP EM TS ET NE WP AM NW CD PG
_EFER_MODELLED = 0x1 | 0x100 | 0x400 | 0x800   # SCE LME LMA NXE
_RFLAGS_RESERVED = ~0x3F7FD7 & ((1 << 64) - 1)   # bits 3, 5, 15, 22-63 (bit 1 KVM sets itself)
_APIC_BASE_RSVD_LOW = 0x2FF       # bits 7:0 and 9 (kvm_apic_set_base)
_APIC_ENABLE, _APIC_X2APIC = 1 << 11, 1 << 10


class SregsState(_Model):
    """KVM_SET_SREGS applied after the mode's boot set-up: given fields replace the boot values."""

    cr0: U64 | None = None
    cr3: U64 | None = None
    cr4: U64 | None = None
    efer: U64 | None = None
    apic_base: U64 | None = None
    cs: SegmentState | None = None
    ds: SegmentState | None = None
    es: SegmentState | None = None
    fs: SegmentState | None = None
    gs: SegmentState | None = None
    ss: SegmentState | None = None
    tr: SegmentState | None = None
    ldt: SegmentState | None = None
    gdt: DtableState | None = None
    idt: DtableState | None = None

    @model_validator(mode="after")
    def _kvm_rejects(self) -> "SregsState":
        """The checks that need no other field (kvm_is_valid_cr0, reserved bits) as field errors."""
        cr0, cr4, efer, apic = self.cr0, self.cr4, self.efer, self.apic_base
        if cr0 is not None:
            if cr0 >> 32:
                raise FieldError(("cr0",), f"cr0 {cr0:#x} sets bits 63:32 (KVM_SET_SREGS: EINVAL)")
            if cr0 & ~_CR0_BITS:
                raise FieldError(("cr0",), f"cr0 {cr0:#x} sets reserved bits {cr0 & ~_CR0_BITS:#x}")
            if cr0 & (1 << 29) and not cr0 & (1 << 30):
                raise FieldError(("cr0",), f"cr0 {cr0:#x}: NW without CD (KVM_SET_SREGS: EINVAL)")
            if cr0 & (1 << 31) and not cr0 & 1:
                raise FieldError(("cr0",), f"cr0 {cr0:#x}: PG without PE (KVM_SET_SREGS: EINVAL)")
        if cr4 is not None:
            from kvmsim.kvm.cr import CR4_RESERVED_BITS  # the sim model (unicorn) loads only for a scenario setting cr4
            if cr4 & CR4_RESERVED_BITS:
                raise FieldError(("cr4",), f"cr4 {cr4:#x} sets bits KVM never allows ({cr4 & CR4_RESERVED_BITS:#x}; "
                                 "KVM_SET_SREGS: EINVAL)")
        if efer is not None and efer & ~_EFER_MODELLED:
            raise FieldError(("efer",), f"efer {efer:#x} sets bits {efer & ~_EFER_MODELLED:#x}; kvmsim models "
                             "SCE, LME, LMA and NXE (0xd01)")
        if apic is not None:
            if apic & _APIC_BASE_RSVD_LOW:
                raise FieldError(("apic_base",), f"apic_base {apic:#x} sets reserved bits "
                                 f"{apic & _APIC_BASE_RSVD_LOW:#x} (KVM_SET_SREGS: EINVAL)")
            if apic & _APIC_X2APIC and not apic & _APIC_ENABLE:
                raise FieldError(("apic_base",), f"apic_base {apic:#x}: x2APIC enabled with the APIC "
                                 "disabled (KVM_SET_SREGS: EINVAL)")
        return self


class RegsState(_Model):
    """KVM_SET_REGS applied after the mode's boot set-up: given registers replace the boot values
    (RIP = entry, RSP = the mode's stack, RFLAGS = 0x2, others 0)."""

    rax: U64 | None = None
    rbx: U64 | None = None
    rcx: U64 | None = None
    rdx: U64 | None = None
    rsi: U64 | None = None
    rdi: U64 | None = None
    rsp: U64 | None = None
    rbp: U64 | None = None
    r8: U64 | None = None
    r9: U64 | None = None
    r10: U64 | None = None
    r11: U64 | None = None
    r12: U64 | None = None
    r13: U64 | None = None
    r14: U64 | None = None
    r15: U64 | None = None
    rip: U64 | None = None
    rflags: U64 | None = None

    @model_validator(mode="after")
    def _rflags_reserved(self) -> "RegsState":
        if self.rflags is not None and self.rflags & _RFLAGS_RESERVED:
            raise FieldError(("rflags",), f"rflags {self.rflags:#x} sets reserved bits "
                             f"{self.rflags & _RFLAGS_RESERVED:#x} (3, 5, 15 and 22-63 must be 0)")
        return self


class VcpuState(_Model):
    """The vCPU's initial state, over what the mode's boot set-up chose (vmm/boot.py)."""

    regs: RegsState = Field(default_factory=RegsState)
    sregs: SregsState = Field(default_factory=SregsState)


# -- issue 14 (events from userspace): the VMM's userspace PIC and its guest debugger ------------

class VmmIrq(_Model):
    """An interrupt the VMM's userspace PIC raises (no kvm.irqchip): from then on, before every KVM_RUN,
    KVM_INTERRUPT once kvm_run says ready_for_interrupt_injection, else request_interrupt_window = 1
    (QEMU's kvm_arch_pre_run); KVM_EXIT_IRQ_WINDOW_OPEN then just re-enters."""

    at_userspace_exit: Count = Field(description="raised after this many exits to userspace (0: before the first KVM_RUN)")
    vector: U8


GUEST_DEBUG_CONTROLS = {"enable": 0x1, "singlestep": 0x2, "use_sw_bp": 0x10000, "use_hw_bp": 0x20000}


class VmmGuestDebug(_Model):
    """KVM_SET_GUEST_DEBUG the VMM issues after this many exits to userspace; control [] turns it off.
    At KVM_EXIT_DEBUG the VMM records run->debug.arch and re-enters (a #BP: past the INT3)."""

    at_userspace_exit: Count
    control: list[Literal["enable", "singlestep", "use_sw_bp", "use_hw_bp"]] = Field(default_factory=list)
    debugreg: list[U64] = Field(default_factory=list, max_length=8, description="DR0-3 addresses, debugreg[7]: DR7 "
                                "(use_hw_bp)")

    @property
    def control_bits(self) -> int:
        return sum(GUEST_DEBUG_CONTROLS[c] for c in set(self.control))


class VmmSettings(_Model):
    """How the userspace VMM's run loop behaves."""

    on_hlt: Literal["stop", "resume"] = Field(
        "stop", description="KVM_EXIT_HLT: stop the run (stop.reason hlt), or KVM_RUN again "
                            "(the guest continues after its HLT; bounded by limits)")
    irqs: list[VmmIrq] = Field(default_factory=list, description="the VMM's userspace PIC: interrupts it raises")
    guest_debug: list[VmmGuestDebug] = Field(default_factory=list, description="KVM_SET_GUEST_DEBUG calls")


# ---------------------------------------------------------------- the scenario

DIFFABLE_FIELDS = ("stop", "exits", "userspace", "emulation", "serial", "regs", "sregs", "memory",
                   "devices", "exceptions", "guest_insns")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _host_dependent(v: str) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[a-z_]+(\.[A-Za-z0-9_|]+)*", v):
        raise ValueError(f"expected a dotted field path like 'regs.rbx', got {v!r}")
    if v.split(".")[0] not in DIFFABLE_FIELDS:
        raise ValueError(f"{v!r} does not start with a result field ({', '.join(DIFFABLE_FIELDS)})")
    return v


class Scenario(_Model):
    """One scenario file."""

    name: str = Field(description="identifier, also the test id")
    description: str
    guest: Guest
    memory: list[Memslot] = Field(default_factory=lambda: [Memslot(gpa=0, size=2 << 20)],
                                  description="default: 2 MiB at 0 (128 MiB with guest.multiboot)")
    devices: list[Device] = Field(default_factory=default_devices,
                                  description="default: serial16550 at 0x3f8 and debug-exit at 0xf4")
    kvm: Kvm = Field(default_factory=Kvm)
    paging: Paging = Field(default_factory=Paging)
    userspace: Userspace = Field(default_factory=Userspace)
    events: list[Event] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    vcpu: VcpuState = Field(default_factory=VcpuState, description="initial registers over the boot state")
    vmm: VmmSettings = Field(default_factory=VmmSettings)
    backends: list[Literal["sim", "kvm"]] = Field(default_factory=lambda: ["sim", "kvm"], min_length=1)
    known_failure: str | None = Field(
        None, min_length=1, description="why the sim fails this scenario today: its test is then an "
        "xfail(strict=True) on the sim (and in the /dev/kvm diff), so delete this once it passes")
    host_dependent: list[Annotated[str, AfterValidator(_host_dependent)]] = Field(
        default_factory=list, description="dotted result fields `diff` does not compare, e.g. regs.rbx")
    expect: Expect = Field(default_factory=Expect)

    _path: Path | None = PrivateAttr(None)
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    @property
    def path(self) -> Path | None:
        """The YAML file this scenario was loaded from (None if built in code)."""
        return self._path

    def line_of(self, *loc: str | int) -> int | None:
        """The YAML line of a field (`line_of("guest", "mode")`, `line_of("devices", 1)`), or the
        nearest enclosing field's line; None when not loaded from a file."""
        key = tuple(str(c) for c in loc)
        while key and key not in self._lines:
            key = key[:-1]
        return self._lines.get(key)

    def asm_line_offset(self) -> int:
        """For inline `guest.asm`: assembler line N is YAML line N + this (guest_build's line_offset)."""
        line = self._lines.get(("guest", "asm", "<value>"))
        return line - 1 if line else 0

    def device(self, name: str) -> Any:
        return next(d for d in self.devices if d.name == name)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        if not _NAME_RE.match(self.name):
            raise FieldError(("name",), f"name {self.name!r} must be letters, digits and _.+- only")
        self._name_devices()
        if self.guest.multiboot is not None and "memory" not in self.model_fields_set:
            self.memory = [Memslot(gpa=0, size=MULTIBOOT_DEFAULT_RAM)]
        self._check_platform()
        self._check_memory()
        self._check_multiboot()
        self._check_expect()
        self._check_vcpu()
        if self.paging.user and self.guest.mode != "long64":
            raise FieldError(("paging", "user"), f"paging.user needs guest.mode long64 (a {self.guest.mode} "
                             "guest starts without the boot page tables)")
        if len(set(self.backends)) != len(self.backends):
            raise FieldError(("backends",), "a backend is listed twice")
        return self

    def _name_devices(self) -> None:
        types = [d.type for d in self.devices]
        for d in self.devices:
            if d.name is None:
                d.name = d.type if types.count(d.type) == 1 else f"{d.type}@{d.address():#x}"
        seen: dict[str, int] = {}
        for i, d in enumerate(self.devices):
            if d.name in seen:
                raise FieldError(("devices", i, "name"), f"device name {d.name!r} is used twice "
                                 f"(also devices[{seen[d.name]}]); give one a 'name'")
            seen[d.name] = i

    def _check_memory(self) -> None:
        self._check_memslots()
        for d in self.devices:          # here, once the memslots are final: fw-cfg's RAM size follows them
            if d.type == "fw-cfg" and d.ram_size is None:
                d.ram_size = sum(m.size for m in self.memory if not m.readonly)
        if sum(m.size for m in self.memory) > MAX_SCENARIO_RAM:
            raise FieldError(("memory",), f"memslots total more than kvmsim backs with host memory "
                             f"({MAX_SCENARIO_RAM:#x})")
        for i, d in enumerate(self.devices):
            claims = [(f, gpa, n) for bus, f, gpa, n in _claims(d) if bus == "mmio"]
            if d.type == "coalesced-mmio" or (d.type == "ioeventfd" and d.gpa is not None):
                claims = [("gpa", d.gpa, max(_vmm_span(d), 1))]
            for field, gpa, n in claims:
                for s in self.memory:
                    if gpa < s.gpa + s.size and s.gpa < gpa + n:
                        raise FieldError(("devices", i, field), f"{d.type} at {gpa:#x} is inside RAM "
                                         f"(memslot {s.gpa:#x}+{s.size:#x}); MMIO devices need unbacked GPAs")
        self._check_acpi_tables()
        self._check_bios_irq()
        self._check_device_overlap()
        self._check_ioeventfds()

    def _check_memslots(self) -> None:
        """Each slot as the VMM passes it to KVM_SET_USER_MEMORY_REGION (slot id = its index), through
        the same checks as the sim's ioctl (kvmsim/kvm/memslot.py), then kvmsim's own RAM bound."""
        made: dict[int, tuple[int, int, int, int]] = {}
        addr = VMM_USERSPACE_ADDR
        for i, m in enumerate(self.memory):
            mem = KvmUserspaceMemoryRegion(i, KVM_MEM_READONLY if m.readonly else 0, m.gpa, m.size, addr)
            err, _change = kvm_set_memory_region_check(made, self.kvm.enable_ept, mem)
            if err is not None and err.field == "userspace_addr":   # the slots add up past any VMM's mmap
                raise FieldError(("memory", i, "size"), f"memslot {i}: size {m.size:#x} (with the slots before it) "
                                 "is more than a VMM can map in its address space (KVM_SET_USER_MEMORY_REGION: "
                                 "EINVAL from access_ok)")
            if err is not None:
                where = ("memory", i, err.field) if err.field in ("gpa", "size") else ("memory", i)
                raise FieldError(where, f"memslot {i}: {err.message()}")
            if m.size > MAX_SCENARIO_RAM:
                raise FieldError(("memory", i, "size"), f"memslot size {m.size:#x} is more than kvmsim backs "
                                 f"with host memory ({MAX_SCENARIO_RAM:#x} in all)")
            made[i] = (m.gpa, m.size, addr, mem.flags)
            addr += m.size

    def _check_acpi_tables(self) -> None:
        """The tables are written into RAM at boot: one memslot must hold them all."""
        for i, d in enumerate(self.devices):
            if d.type != "acpi-tables":
                continue
            end = d.rsdp + acpi_tables_size(d.rsdp)
            if not any(m.gpa <= d.rsdp and end <= m.gpa + m.size for m in self.memory):
                raise FieldError(("devices", i, "rsdp"), f"ACPI tables at {d.rsdp:#x}+{end - d.rsdp:#x} are not "
                                 "inside one memslot (firmware tables live in guest RAM)")

    def _check_bios_irq(self) -> None:
        """The IVT and the handler stub are written into RAM below 1 MiB; the state needs KVM's PIC and PIT."""
        for i, d in enumerate(self.devices):
            if d.type != "bios-irq":
                continue
            if not (self.kvm.irqchip and self.kvm.pit):
                raise FieldError(("devices", i, "type"), "bios-irq programs the in-kernel PIC and PIT: it needs "
                                 "kvm.irqchip: true and kvm.pit: true")
            if d.handlers % 16 or d.handlers + BIOS_IRQ_STUB_MAX > 0x100000:
                raise FieldError(("devices", i, "handlers"), f"handlers {d.handlers:#x} must be 16-byte aligned "
                                 "and below 1 MiB (a real-mode segment:offset)")
            for lo, hi, what in ((0, 0x400, "the IVT"), (d.handlers, d.handlers + BIOS_IRQ_STUB_MAX, "the handlers")):
                if not any(m.gpa <= lo and hi <= m.gpa + m.size for m in self.memory):
                    raise FieldError(("devices", i, "type"), f"{what} at {lo:#x}+{hi - lo:#x} is not inside one "
                                     "memslot (firmware state lives in guest RAM)")
        if self.kvm.pit and not self.kvm.irqchip:
            raise FieldError(("kvm", "pit"), "KVM_CREATE_PIT2 needs the in-kernel PIC: set kvm.irqchip: true "
                             "(without it the ioctl fails with ENOENT)")

    def _check_platform(self) -> None:
        """One of each machine-wide device (QEMU: 'at most one fw_cfg device is permitted'; the FADT
        names one PM timer)."""
        seen: dict[str, int] = {}
        for i, d in enumerate(self.devices):
            if d.type in ("fw-cfg", "pc-testdev", "acpi-pm-timer", "acpi-tables", "bios-irq"):
                if d.type in seen:
                    raise FieldError(("devices", i, "type"), f"a second {d.type} (also devices[{seen[d.type]}]); "
                                     "a machine has one")
                seen[d.type] = i
    def _check_multiboot(self) -> None:
        """The kernel's segments, the boot tables, the info area and the modules placed as `run`
        will place them (vmm/multiboot.py plan_boot), each failure at the field to fix."""
        g = self.guest
        if g.kernel is None:
            return
        try:
            plan_boot(g.kernel, [p.stat().st_size for p in g.module_paths], self.ram_ranges(),
                      g.multiboot_strings_size())
        except MultibootError as e:
            loc: tuple[str | int, ...] = ("memory",) if e.field == "memory" else (
                ("guest", e.field) if e.index is None else ("guest", e.field, e.index))
            raise FieldError(loc, e.msg) from None

    def ram_ranges(self) -> list[RamRange]:
        """The memslots as the multiboot loader sees them."""
        return [RamRange(m.gpa, m.size, not m.readonly) for m in self.memory]

    def _check_ioeventfds(self) -> None:
        """KVM_IOEVENTFD's EEXIST: same bus and address, and a zero length on either, or equal lengths
        with either one matching any value or both the same datamatch (as real KVM answers)."""
        seen: list[tuple[int, Any]] = []
        for i, d in enumerate(self.devices):
            if d.type != "ioeventfd":
                continue
            for j, o in seen:
                same_place = (d.port is None) == (o.port is None) and d.address() == o.address()
                if same_place and (not d.len or not o.len or (d.len == o.len and (
                        d.datamatch is None or o.datamatch is None or d.datamatch == o.datamatch))):
                    raise FieldError(("devices", i), f"ioeventfd at {d.address():#x} collides with devices[{j}] "
                                     f"{o.name!r} (KVM_IOEVENTFD: EEXIST)")
            seen.append((i, d))

    def _check_device_overlap(self) -> None:
        """The VMM's port and MMIO buses give each address to one device (vmm/bus.py register)."""
        claimed: list[tuple[str, int, int, int]] = []  # bus, base, end, device index
        for i, d in enumerate(self.devices):
            mine = []
            for bus, field, base, n in _claims(d):   # in-kernel devices (ioeventfd, coalesced MMIO) claim none
                end = base + n
                for b, lo, hi, j in claimed:
                    if b == bus and base < hi and lo < end:
                        other = self.devices[j]
                        raise FieldError(("devices", i, field),
                                         f"{d.type} at {base:#x}+{end - base:#x} overlaps devices[{j}] {other.name!r} "
                                         f"at {lo:#x}+{hi - lo:#x} on the {bus} bus")
                mine.append((bus, base, end, i))
            claimed += mine

    def _check_vcpu(self) -> None:
        """KVM_SET_SREGS's EINVAL cases on the state the run will set: the boot state of the
        mode with `vcpu.sregs` over it (kvm/x86.py kvm_is_valid_sregs, as the field to fix)."""
        found = sregs_problem(self)
        if found is not None and not self.vcpu.sregs.model_fields_set:   # the boot state itself, under kvm.cpuid
            raise FieldError(("kvm", "cpuid"), f"the {self.guest.mode} boot state is refused under this CPUID "
                             f"table: {found[1]}")
        if found is not None:
            raise FieldError(("vcpu", "sregs") + found[0], found[1])

    def _check_expect(self) -> None:
        e, names = self.expect, {d.name for d in self.devices}
        for dev in e.devices or {}:
            if dev not in names:
                raise FieldError(("expect", "devices", dev),
                                 f"no device named {dev!r} (devices: {', '.join(sorted(names)) or 'none'})")
        if self.vmm.irqs and self.kvm.irqchip:     # KVM_INTERRUPT is the userspace PIC's: ENXIO with KVM's PIC
            raise FieldError(("vmm", "irqs"), "vmm.irqs is a userspace PIC (KVM_INTERRUPT); with kvm.irqchip: true "
                             "the kernel's PIC owns the lines and KVM_INTERRUPT fails with ENXIO")
        for i, ev in enumerate(self.events if self.kvm.irqchip else ()):
            if ev.inject is not None and ev.inject != "nmi":
                raise FieldError(("events", i, "inject"), "inject: {irq: N} is KVM_INTERRUPT, the userspace PIC's; "
                                 "with kvm.irqchip: true it fails with ENXIO")
        if e.stop and e.stop.reason == "hlt" and self.vmm.on_hlt == "resume":
            raise FieldError(("expect", "stop", "reason"), "expects a hlt stop but vmm.on_hlt: resume re-enters "
                             "the guest after every KVM_EXIT_HLT")
        for reason in ("debug-exit", "isa-debug-exit", "bochs-shutdown"):   # the device that stops that way
            if e.stop and e.stop.reason == reason and not any(d.type == reason for d in self.devices):
                raise FieldError(("expect", "stop", "reason"), f"expects a {reason} stop but there is no {reason} device")
        if (e.serial is not None or e.serial_contains is not None) and not any(
                d.type == "serial16550" for d in self.devices):
            raise FieldError(("expect",), "expects serial output but there is no serial16550 device")
