"""Guest builder: GNU as/ld/objcopy turn a guests/*.S source into a flat image plus symbols.

Like kvm-unit-tests' build (but for one flat binary per mode): the source is assembled
with a generated prelude (`.code16/.code32/.code64`) and the mode symbols

    KVMSIM_MODE          16, 32 or 64
    KVMSIM_MODE_REAL16   1 in real16, else 0   (likewise _PROT32, _LONG64)

defined with `--defsym`, so one source can serve several modes (`.if KVMSIM_MODE_LONG64`).
`-I guests/lib` (and the source's own directory) is on the include path, so guests
`.include "kvmsim.inc"`.  The object is linked at the mode's origin by a generated
linker script that puts everything (text, rodata, data, the exception table, bss) in one
section, and `objcopy -O binary` gives the bytes loaded at `load_addr`.

Results are cached by content hash (source, every file it includes, mode, origin,
defines, tool versions) under `$KVMSIM_CACHE_DIR/guests`, by default the user's cache directory
(`$XDG_CACHE_HOME/kvmsim/guests`, `~/.cache/kvmsim/guests` without it), whatever directory the
command runs in.  The cache holds at most CACHE_MAX_BYTES (`$KVMSIM_CACHE_MAX_BYTES`): storing an
image evicts the least recently used ones (a hit refreshes an entry's mtime) until it fits.

Errors are `GuestBuildError`s that quote the assembler's own `file:line: Error: ...`
lines, with the file named as the user wrote it (inline YAML `asm:` text gets the YAML
path and its line numbers via `display_name` and `line_offset`).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

from kvmsim.errors import GuestBuildError

Mode = Literal["real16", "prot32", "long64", "reset"]

# "reset": 16-bit code linked at the 64 KiB below 4 GiB, entered at the reset vector 0xfffffff0.
MODES: tuple[Mode, ...] = ("real16", "prot32", "long64", "reset")
# Kept in step with kvmsim.vmm.boot.DEFAULT_ORIGIN (the scenario layer may not import vmm/).
DEFAULT_ORIGIN: dict[str, int] = {"real16": 0x1000, "prot32": 0x100000, "long64": 0x100000, "reset": 0xFFFF0000}
GUEST_LIB_DIR = Path(__file__).resolve().parents[2] / "guests" / "lib"
TOOLS = ("as", "ld", "objcopy", "nm")
CACHE_FORMAT = 1  # bump when the cached layout or the build recipe changes

_AS_FLAGS = {"real16": ["--32"], "prot32": ["--32"], "long64": ["--64"], "reset": ["--32"]}
_LD_EMULATION = {"real16": "elf_i386", "prot32": "elf_i386", "long64": "elf_x86_64", "reset": "elf_i386"}
_BITS = {"real16": 16, "prot32": 32, "long64": 64, "reset": 16}

_LINKER_SCRIPT = """\
SECTIONS
{{
  . = {origin:#x};
  .text : {{
    *(.text.entry)
    *(.text)
    *(.text.*)
    *(.rodata) *(.rodata.*)
    *(.data) *(.data.*)
    . = ALIGN(8);
    __kvmsim_extable_start = .;
    KEEP(*(.kvmsim_extable))
    __kvmsim_extable_end = .;
    *(.bss) *(.bss.*) *(COMMON)
    . = ALIGN(16);
  }}
  /DISCARD/ : {{ *(.note*) *(.comment) *(.eh_frame*) }}
}}
"""

_INCLUDE_RE = re.compile(r'^\s*\.(?:include|incbin)\s+"([^"]+)"', re.MULTILINE)


@dataclass(frozen=True)
class GuestImage:
    """A flat guest image: `image` goes at GPA `load_addr`; execution starts at `entry`."""

    mode: str
    load_addr: int
    entry: int
    image: bytes
    symbols: dict[str, int] = field(default_factory=dict)

    @functools.cached_property
    def _sorted_symbols(self) -> tuple[list[int], list[str]]:
        # One name per address: prefer labels over library/linker internals, then globals order.
        best: dict[int, str] = {}
        for name, addr in sorted(self.symbols.items(), key=lambda kv: (_sym_rank(kv[0]), kv[0])):
            best.setdefault(addr, name)
        addrs = sorted(best)
        return addrs, [best[a] for a in addrs]

    def symbolize(self, addr: int) -> str:
        """`"mmio_read+0x6"`: the nearest preceding symbol, or plain hex outside the image."""
        addrs, names = self._sorted_symbols
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0 or not self.load_addr <= addr < self.load_addr + max(len(self.image), 1):
            return f"{addr:#x}"
        off = addr - addrs[i]
        return names[i] if off == 0 else f"{names[i]}+{off:#x}"

    @property
    def end(self) -> int:
        return self.load_addr + len(self.image)


def _sym_rank(name: str) -> int:
    if name.startswith("__kvmsim") or name.startswith("."):
        return 2
    if name.startswith("kvmsim_"):
        return 1
    return 0


# ---------------------------------------------------------------- tools

def _missing_tool(tool: str) -> GuestBuildError:
    return GuestBuildError(None, None, f"binutils tool '{tool}' not found on PATH; guests are built "
                           f"with GNU binutils (install it: apt-get install binutils)")


@functools.lru_cache(maxsize=1)
def _tool_versions() -> str:
    """First line of each tool's --version; part of the cache key."""
    lines = []
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise _missing_tool(tool)
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
        lines.append((out.stdout.splitlines() or [""])[0])
    return "\n".join(lines)


def binutils_available() -> bool:
    """The one place tests and the CLI ask whether guests can be built."""
    try:
        _tool_versions()
    except GuestBuildError:
        return False
    return True


CACHE_MAX_BYTES = 64 << 20   # a built guest is a few KiB of image and symbols


def cache_dir() -> Path:
    """$KVMSIM_CACHE_DIR, else the XDG base-directory cache ($XDG_CACHE_HOME if absolute, else ~/.cache)."""
    base = os.environ.get("KVMSIM_CACHE_DIR")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        root = (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "kvmsim"
    return root / "guests"


def cache_max_bytes() -> int:
    try:
        return max(0, int(os.environ.get("KVMSIM_CACHE_MAX_BYTES", CACHE_MAX_BYTES)))
    except ValueError:
        return CACHE_MAX_BYTES


# ---------------------------------------------------------------- build

def build_guest(source: Path | str | None, asm_text: str | None, mode: Mode,
                origin: int | None = None, *, display_name: str | None = None,
                line_offset: int = 0, defines: Mapping[str, int] | None = None,
                include_dirs: Sequence[Path] = (), use_cache: bool = True,
                elf_out: Path | None = None) -> GuestImage:
    """Assemble and link one guest; exactly one of `source` and `asm_text` is given.

    `display_name` names the source in messages (default: `source` as written, or
    `<asm>` for inline text); assembler line N is reported as N + `line_offset`.
    `defines` become extra `--defsym NAME=value` (e.g. CPUID_LEAF, PIO_LOOP_COUNT).
    `elf_out`: also keep the linked ELF there (symbols for gdb); the build then skips the cache.
    """
    if mode not in MODES:
        raise GuestBuildError(display_name, None, f"unknown guest mode {mode!r} (one of {', '.join(MODES)})")
    if (source is None) == (asm_text is None):
        raise GuestBuildError(display_name, None, "a guest needs exactly one of 'source' and 'asm'")
    origin = DEFAULT_ORIGIN[mode] if origin is None else origin
    defines = dict(defines or {})
    inc_dirs = [Path(d) for d in include_dirs]
    if source is not None:
        path = Path(source)
        display = display_name or str(source)
        if not path.is_file():
            raise GuestBuildError(display, None, "guest source not found")
        text = _read_source(path, display).decode("utf-8", "replace")
        inc_dirs.insert(0, path.resolve().parent)
    else:
        display = display_name or "<asm>"
        text = asm_text or ""
    inc_dirs.append(GUEST_LIB_DIR)

    key = _cache_key(text, inc_dirs, mode, origin, defines)
    cached = _cache_load(key) if use_cache and elf_out is None else None
    if cached is not None:
        return cached
    image = _build(text, display, line_offset, mode, origin, defines, inc_dirs, elf_out)
    if use_cache:
        _cache_store(key, image)
    return image


def _mode_defsyms(mode: str, defines: Mapping[str, int]) -> list[str]:
    syms = {"KVMSIM_MODE": _BITS[mode]}
    syms.update({f"KVMSIM_MODE_{m.upper()}": int(m == mode) for m in MODES})
    syms.update(defines)
    args = []
    for name, value in syms.items():
        args += ["--defsym", f"{name}={int(value)}"]
    return args


def _build(text: str, display: str, line_offset: int, mode: str, origin: int,
           defines: Mapping[str, int], inc_dirs: list[Path], elf_out: Path | None = None) -> GuestImage:
    _tool_versions()  # raises the friendly error if binutils is missing
    with tempfile.TemporaryDirectory(prefix="kvmsim-guest-") as tmp:
        t = Path(tmp)
        src, prelude, obj, elf, binf, lds = (t / n for n in (
            "guest.S", "prelude.s", "guest.o", "guest.elf", "guest.bin", "guest.ld"))
        src.write_text(text if text.endswith("\n") else text + "\n")
        prelude.write_text(f".code{_BITS[mode]}\n")
        lds.write_text(_LINKER_SCRIPT.format(origin=origin))

        def fix(msg: str) -> str:
            return _rewrite_paths(msg, {str(src): display, str(obj): display, str(elf): display},
                                  str(src), line_offset)

        includes = [a for d in inc_dirs for a in ("-I", str(d))]
        _run(["as", *_AS_FLAGS[mode], *includes, *_mode_defsyms(mode, defines),
              "-o", str(obj), str(prelude), str(src)], "assembly failed", display, fix)
        _run(["ld", "-m", _LD_EMULATION[mode], "-N", "--build-id=none", "-e", hex(origin),
              "-T", str(lds), "-o", str(elf), str(obj)], "link failed", display, fix)
        _run(["objcopy", "-O", "binary", str(elf), str(binf)], "objcopy failed", display, fix)
        nm = _run(["nm", "-n", str(elf)], "nm failed", display, fix)
        image = binf.read_bytes()
        if elf_out is not None:
            shutil.copyfile(elf, elf_out)

    symbols: dict[str, int] = {}
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] not in "aAU":
            symbols[parts[2]] = int(parts[0], 16)
    entry = symbols.get("_start", origin)
    return GuestImage(mode=mode, load_addr=origin, entry=entry, image=image, symbols=symbols)


# Bounds on one tool run, so that hostile source (`.skip 1 << 40`, `.incbin "/dev/zero"`, `.rept 10**9`)
# is an error, not a hang or the host's memory: wall time, address space, bytes written, message lines.
TOOL_SECONDS = 20
TOOL_MEMORY = 1 << 30
TOOL_FILE_BYTES = 64 << 20      # the largest object/image a tool may write (guest images are KiB)
TOOL_MESSAGE_LINES = 30


def _tool_limits() -> None:
    """In the tool's child process, before exec: its resource limits (exceeding them fails the tool)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (TOOL_MEMORY, TOOL_MEMORY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (TOOL_FILE_BYTES, TOOL_FILE_BYTES))
    # CPU time too: a tool whose caller is gone (killed) must still end by itself.
    resource.setrlimit(resource.RLIMIT_CPU, (TOOL_SECONDS + 5, TOOL_SECONDS + 10))


def _bounded(msg: str) -> str:
    lines = msg.splitlines()
    if len(lines) <= TOOL_MESSAGE_LINES:
        return "\n".join(ln[:500] for ln in lines)
    return "\n".join([ln[:500] for ln in lines[:TOOL_MESSAGE_LINES]]
                     + [f"... and {len(lines) - TOOL_MESSAGE_LINES:,} more lines"])


def _run(argv: list[str], what: str, display: str, fix: Callable[[str], str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, check=False, timeout=TOOL_SECONDS,
                              preexec_fn=_tool_limits)
    except FileNotFoundError:
        raise _missing_tool(argv[0]) from None
    except subprocess.TimeoutExpired:
        raise GuestBuildError(display, None, f"{what}: {argv[0]} did not finish in {TOOL_SECONDS} s "
                              "(a guest this large or slow to build is refused)") from None
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        msg = _bounded(fix((proc.stderr.decode("utf-8", "replace") + out).strip()))
        if proc.returncode < 0:   # killed by a signal: a resource limit above, or a crash of the tool
            import signal
            sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else proc.returncode
            why = {"SIGXFSZ": f"its output exceeded {TOOL_FILE_BYTES >> 20} MiB",
                   "SIGXCPU": f"it used more than {TOOL_SECONDS} s of CPU"}.get(str(sig), f"killed by {sig}")
            msg = f"{argv[0]}: {why} (a guest this large is refused; memory bound {TOOL_MEMORY >> 30} GiB)" + (
                f"\n{msg}" if msg else "")
        raise GuestBuildError(display, _first_error_line(msg, display), f"{what}:\n{msg}")
    return out


def _first_error_line(msg: str, display: str) -> int | None:
    """Line of the first error in the user's file.  Inside a macro, gas (2.40) prints the
    macro's own line, followed by "macro invoked from here" lines; the outermost invocation
    is the line the user wrote, so that one is reported."""
    lines = msg.splitlines()
    where = re.compile(rf"^{re.escape(display)}:(\d+): ")
    for i, line in enumerate(lines):
        if ": Error: " not in line:
            continue
        found = where.match(line)
        for info in lines[i + 1:]:
            if "Info: macro invoked from here" not in info:
                break
            found = where.match(info) or found
        if found:
            return int(found.group(1))
    return None


def _rewrite_paths(msg: str, names: Mapping[str, str], src: str, line_offset: int) -> str:
    """Temp paths → the user's names; `src:N:` → `display:N+line_offset:`."""
    display = names[src]
    msg = re.sub(rf"{re.escape(src)}:(\d+):",
                 lambda m: f"{display}:{int(m.group(1)) + line_offset}:", msg)
    for tmp_name, shown in names.items():
        msg = msg.replace(tmp_name, shown)
    # -N makes one RWX segment on purpose (a flat image); ld >= 2.39 warns about it.
    return "\n".join(ln for ln in msg.splitlines() if "LOAD segment with RWX" not in ln)


# ---------------------------------------------------------------- cache

MAX_SOURCE_BYTES = 4 << 20   # a guest source or include file (the largest shipped one is a few KiB)


def _read_source(path: Path, display: str) -> bytes:
    """A source or include file, bounded: /proc/kcore is a "regular file" too, /proc/self/mem answers EIO."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
    except OSError as e:
        raise GuestBuildError(display, None, f"cannot read guest source {str(path)!r}: {e.strerror or e}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise GuestBuildError(display, None, f"guest source {str(path)!r} is larger than {MAX_SOURCE_BYTES >> 20} MiB")
    return data


def _included_texts(text: str, inc_dirs: list[Path], seen: set[Path]) -> list[str]:
    """Texts of every file `.include`d (recursively) that the include path resolves."""
    out = []
    for name in _INCLUDE_RE.findall(text):
        for d in [Path.cwd(), *inc_dirs]:
            p = (d / name).resolve()
            if p.is_file():
                if p not in seen:
                    seen.add(p)
                    body = _read_source(p, name).decode("latin-1")
                    out += [f"{name}\0{body}", *_included_texts(body, inc_dirs, seen)]
                break
    return out


def _cache_key(text: str, inc_dirs: list[Path], mode: str, origin: int,
               defines: Mapping[str, int]) -> str:
    h = hashlib.sha256()
    for part in [f"v{CACHE_FORMAT}", _tool_versions(), mode, hex(origin),
                 json.dumps(sorted(defines.items())), text, *_included_texts(text, inc_dirs, set())]:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0\1")
    return h.hexdigest()[:32]


def _cache_load(key: str) -> GuestImage | None:
    d = cache_dir()
    try:
        meta = json.loads((d / f"{key}.json").read_text())
        image = (d / f"{key}.bin").read_bytes()
    except (OSError, ValueError):
        return None
    if len(image) != meta.get("size"):
        return None
    try:
        os.utime(d / f"{key}.json")   # recently used: the last to be evicted
    except OSError:
        pass
    return GuestImage(mode=meta["mode"], load_addr=meta["load_addr"], entry=meta["entry"],
                      image=image, symbols=meta["symbols"])


def _cache_store(key: str, img: GuestImage) -> None:
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        meta = {"mode": img.mode, "load_addr": img.load_addr, "entry": img.entry,
                "size": len(img.image), "symbols": img.symbols}
        for suffix, data in ((".bin", img.image), (".json", json.dumps(meta, indent=1).encode())):
            fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{key}")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, d / f"{key}{suffix}")
        _evict(d, cache_max_bytes(), keep=key)
    except OSError:
        pass  # Simplified: an unwritable cache only costs a rebuild next time.


def _evict(d: Path, limit: int, keep: str) -> None:
    """Remove least recently used entries (by their .json's mtime) until the cache fits `limit`;
    the entry just stored stays even when it alone is larger."""
    entries = []
    total = 0
    for meta in d.glob("*.json"):
        key = meta.stem
        try:
            st = meta.stat()
            size = st.st_size + (d / f"{key}.bin").stat().st_size
        except OSError:
            size, st = 0, None
        total += size
        entries.append((st.st_mtime_ns if st else 0, key, size))
    if total <= limit:
        return
    for _mtime, key, size in sorted(entries):
        if key == keep:
            continue
        for suffix in (".json", ".bin"):
            try:
                (d / f"{key}{suffix}").unlink()
            except FileNotFoundError:
                pass
        total -= size
        if total <= limit:
            break
