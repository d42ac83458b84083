"""The register files gdb's x86 targets expect, and the target description XML that names them.

gdb numbers a remote target's registers by their order in the target description it reads
(`qXfer:features:read:target.xml`), and the `g` packet is those registers back to back in that
order, little-endian.  The two layouts below follow the feature names, register names, sizes and
order of gdb's own i386 (32bit-core, 32bit-sse) and amd64 (64bit-core, 64bit-sse,
64bit-segments) descriptions, so gdb's i386/amd64 code recognises every register it needs.

Each register names the vCPU value it shows (`src`): a 32-bit register of the i386 layout is the
low half of the 64-bit one (`eax` is `rax`), as in QEMU's gdbstub.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr


@dataclass(frozen=True, slots=True)
class GdbReg:
    """One register of a layout: gdb's name, width in bits, its tdesc type and group, and the vCPU
    value it shows."""

    name: str
    bits: int
    type: str
    src: str
    group: str = ""

    @property
    def size(self) -> int:
        return self.bits // 8


@dataclass(frozen=True, slots=True)
class Layout:
    """A target description: gdb's architecture name and the registers of each feature, in order."""

    arch: str
    features: tuple[tuple[str, tuple[GdbReg, ...]], ...]

    @property
    def regs(self) -> tuple[GdbReg, ...]:
        return tuple(r for _name, regs in self.features for r in regs)

    def index(self, name: str) -> int:
        """The gdb register number of `name` (its place in the description)."""
        for i, r in enumerate(self.regs):
            if r.name == name:
                return i
        raise KeyError(name)


def _x87(bits: int) -> tuple[GdbReg, ...]:
    """st0-7 and the x87 control registers (gdb's core feature carries them in both layouts)."""
    sts = tuple(GdbReg(f"st{i}", 80, "i387_ext", f"st{i}") for i in range(8))
    ctl = tuple(GdbReg(n, 32, "int", n, "float")
                for n in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"))
    return sts + ctl


_GPR32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_GPR64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp") + tuple(f"r{i}" for i in range(8, 16))
_SEGS = tuple(GdbReg(s, 32, "int32", s) for s in ("cs", "ss", "ds", "es", "fs", "gs"))

I386 = Layout("i386", (
    ("org.gnu.gdb.i386.core",
     tuple(GdbReg(n, 32, "data_ptr" if n in ("esp", "ebp") else "int32", "r" + n[1:]) for n in _GPR32)
     + (GdbReg("eip", 32, "code_ptr", "rip"), GdbReg("eflags", 32, "i386_eflags", "rflags"))
     + _SEGS + _x87(32)),
    ("org.gnu.gdb.i386.sse",
     tuple(GdbReg(f"xmm{i}", 128, "vec128", f"xmm{i}") for i in range(8))
     + (GdbReg("mxcsr", 32, "i386_mxcsr", "mxcsr", "vector"),)),
    # No org.gnu.gdb.i386.segments here: gdb 13's bare-metal i386 architecture has no register
    # numbers for fs_base/gs_base and fails an internal assertion (tdesc_use_registers) on them.
))

AMD64 = Layout("i386:x86-64", (
    ("org.gnu.gdb.i386.core",
     tuple(GdbReg(n, 64, "data_ptr" if n in ("rsp", "rbp") else "int64", n) for n in _GPR64)
     + (GdbReg("rip", 64, "code_ptr", "rip"), GdbReg("eflags", 32, "i386_eflags", "rflags"))
     + _SEGS + _x87(64)),
    ("org.gnu.gdb.i386.sse",
     tuple(GdbReg(f"xmm{i}", 128, "vec128", f"xmm{i}") for i in range(16))
     + (GdbReg("mxcsr", 32, "i386_mxcsr", "mxcsr", "vector"),)),
    ("org.gnu.gdb.i386.segments",
     (GdbReg("fs_base", 64, "int", "fs_base"), GdbReg("gs_base", 64, "int", "gs_base"))),
))

# CPU mode (SiliconVcpu.mode()) -> layout: only 64-bit mode shows the amd64 register file.
LAYOUT_OF_MODE = {"long64": AMD64}


def layout_for(mode: str) -> Layout:
    return LAYOUT_OF_MODE.get(mode, I386)


# Types the descriptions use that gdb does not predefine (tdesc <flags>/<union> elements).
_EFLAGS = (("CF", 0), ("", 1), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9),
           ("DF", 10), ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19),
           ("VIP", 20), ("ID", 21))
_MXCSR = (("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5), ("DAZ", 6), ("IM", 7),
          ("DM", 8), ("ZM", 9), ("OM", 10), ("UM", 11), ("PM", 12), ("FZ", 15))
_VEC128 = (("v4_float", "ieee_single", 4), ("v2_double", "ieee_double", 2), ("v16_int8", "int8", 16),
           ("v8_int16", "int16", 8), ("v4_int32", "int32", 4), ("v2_int64", "int64", 2))


def _types_xml(feature: str) -> list[str]:
    if feature == "org.gnu.gdb.i386.core":
        out = ['<flags id="i386_eflags" size="4">']
        out += [f'<field name="{n}" start="{b}" end="{b}"/>' for n, b in _EFLAGS]
        return out + ["</flags>"]
    if feature == "org.gnu.gdb.i386.sse":
        out = [f'<vector id="{vid}" type="{t}" count="{c}"/>' for vid, t, c in _VEC128]
        out += ['<union id="vec128">']
        out += [f'<field name="{vid}" type="{vid}"/>' for vid, _t, _c in _VEC128]
        out += ['<field name="uint128" type="uint128"/>', "</union>", '<flags id="i386_mxcsr" size="4">']
        out += [f'<field name="{n}" start="{b}" end="{b}"/>' for n, b in _MXCSR]
        return out + ["</flags>"]
    return []


def target_xml(layout: Layout) -> str:
    """The whole description in one document (no xi:include, so one qXfer annex serves it)."""
    out = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', '<target version="1.0">',
           f"<architecture>{layout.arch}</architecture>"]
    for feature, regs in layout.features:
        out.append(f"<feature name={quoteattr(feature)}>")
        out += _types_xml(feature)
        for r in regs:
            group = f' group="{r.group}"' if r.group else ""
            out.append(f'<reg name="{r.name}" bitsize="{r.bits}" type="{r.type}"{group}/>')
        out.append("</feature>")
    out.append("</target>")
    return "\n".join(out) + "\n"
