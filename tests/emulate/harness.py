"""Differential harness: run one instruction natively in unicorn and through the emulator.

A `Case` is code + registers + flags + memory; both sides start from it and produce an
`Outcome` (registers, RIP, flags, data/stack memory, vector registers, port writes, or
the exception vector). The emulator side runs behind RamOps, so every data access goes
through read_emulated/write_emulated; REP strings re-enter as the guest would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from unicorn import (UC_ARCH_X86, UC_HOOK_INSN, UC_HOOK_INTR, UC_MODE_16, UC_MODE_32,
                     UC_MODE_64, Uc, UcError)
from unicorn import x86_const as X

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs

from kvmsim.kvm.emulate.codes import EMULATION_FAILED, EMULATION_OK
from kvmsim.kvm.emulate.flags import String
from kvmsim.kvm.emulate.ramops import RamOps, make_ctxt, run_insn
from kvmsim.scenario.last_writer import effect_of

CODE, DATA, DATA_SIZE, STACK, STACK_SIZE, STACK_TOP = 0x1000, 0x4000, 0x400, 0x8000, 0x1000, 0x8800
MEM_SIZE = 0x20000
CF, PF, AF, ZF, SF, OF, DF, IF = 1, 4, 0x10, 0x40, 0x80, 0x800, 0x400, 0x200
ARITH = CF | PF | AF | ZF | SF | OF
CMP_FLAGS = ARITH | DF | IF | 0x100 | 0x3000 | 0x4000 | 0x40000 | 0x200000

UC_MODES = {"real16": UC_MODE_16, "prot32": UC_MODE_32, "long64": UC_MODE_64}
GPRS = [X.UC_X86_REG_RAX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX, X.UC_X86_REG_RBX,
        X.UC_X86_REG_RSP, X.UC_X86_REG_RBP, X.UC_X86_REG_RSI, X.UC_X86_REG_RDI,
        X.UC_X86_REG_R8, X.UC_X86_REG_R9, X.UC_X86_REG_R10, X.UC_X86_REG_R11,
        X.UC_X86_REG_R12, X.UC_X86_REG_R13, X.UC_X86_REG_R14, X.UC_X86_REG_R15]
GPRS32 = [X.UC_X86_REG_EAX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX, X.UC_X86_REG_EBX,
          X.UC_X86_REG_ESP, X.UC_X86_REG_EBP, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI]
XMMS = [getattr(X, f"UC_X86_REG_XMM{i}") for i in range(16)]
MMS = [getattr(X, f"UC_X86_REG_FP{i}") for i in range(8)]  # MMn = mantissa of FPn


def pio_value(port: int, size: int) -> int:
    """What every port reads, on both sides."""
    return ((port * 0x9E3779B1) ^ 0xA5C3F00F) & ((1 << (8 * size)) - 1)


@dataclass
class Form:
    """One instruction form under test. `code(rng, mode)` returns its bytes."""

    descr: str
    modes: tuple[str, ...]
    code: Callable[[random.Random, str], bytes]
    # Flags masked beyond the SDM's undefined ones (sdm_undefined): a divergence of KVM's
    # emulator kept on purpose, named where the form is defined.
    kvm_divergence: int = 0
    regs: dict[int, Callable[[random.Random, str], int]] = field(default_factory=dict)
    rep: bool = False
    vec: bool = False
    align16: bool = False  # keep vector memory operands mostly 16-byte aligned


@dataclass
class Case:
    code: bytes
    regs: list[int]
    eflags: int
    data: bytes
    stack: bytes
    xmm: list[int]
    mm: list[int]


@dataclass
class Outcome:
    regs: list[int] = field(default_factory=list)
    rip: int = 0
    eflags: int = 0
    data: bytes = b""
    stack: bytes = b""
    xmm: list[int] = field(default_factory=list)
    mm: list[int] = field(default_factory=list)
    outs: list[tuple[int, int, int]] = field(default_factory=list)
    exc: int | None = None
    failed: bool = False


def width(mode: str) -> int:
    return 64 if mode == "long64" else 32


def make_case(form: Form, mode: str, rng: random.Random) -> Case:
    bits = width(mode)
    regs = [rng.getrandbits(bits) for _ in range(16 if mode == "long64" else 8)]
    off = (lambda: rng.randrange(0, 0x100) & ~15) if form.align16 else \
        (lambda: rng.randrange(0, 0x100))
    if form.align16 and rng.random() < 0.15:
        off = lambda: rng.randrange(0, 0x100)  # noqa: E731 (misaligned on purpose)
    regs[3] = DATA + off()          # rBX: the memory operand base
    regs[4] = STACK_TOP             # rSP
    regs[5] = DATA + 0x100 + off()  # rBP
    regs[6] = DATA + 0x200 + rng.randrange(0, 0x80)  # rSI
    regs[7] = DATA + 0x280 + rng.randrange(0, 0x80)  # rDI
    for r, gen in form.regs.items():
        regs[r] = gen(rng, mode) & ((1 << bits) - 1)
    eflags = 0x2 | (rng.getrandbits(12) & ARITH)
    return Case(code=form.code(rng, mode), regs=regs, eflags=eflags,
                data=rng.randbytes(DATA_SIZE), stack=rng.randbytes(STACK_SIZE),
                xmm=[rng.getrandbits(128) for _ in range(16)],
                mm=[rng.getrandbits(64) for _ in range(8)])


# --- unicorn side ---------------------------------------------------------------------
class _UcMachine:
    """One reusable unicorn instance per mode, with I/O and interrupt hooks."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.uc = Uc(UC_ARCH_X86, UC_MODES[mode])
        self.uc.mem_map(0, MEM_SIZE)
        self.exc: int | None = None
        self.outs: list[tuple[int, int, int]] = []
        self.uc.hook_add(UC_HOOK_INTR, self._intr)
        self.uc.hook_add(UC_HOOK_INSN, self._in, None, 1, 0, X.UC_X86_INS_IN)
        self.uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, X.UC_X86_INS_OUT)

    def _intr(self, uc: Uc, intno: int, _: object) -> None:
        self.exc = intno
        uc.emu_stop()

    def _in(self, uc: Uc, port: int, size: int, _: object) -> int:
        return pio_value(port, size)

    def _out(self, uc: Uc, port: int, size: int, value: int, _: object) -> None:
        self.outs.append((port, size, value & ((1 << (8 * size)) - 1)))

    def run(self, case: Case, form: Form) -> Outcome:
        uc, mode = self.uc, self.mode
        self.exc, self.outs = None, []
        uc.mem_write(DATA, case.data)
        uc.mem_write(STACK, case.stack)
        uc.mem_write(CODE, case.code + b"\x90" * 16)
        uc.ctl_remove_cache(CODE, CODE + 0x40)  # drop translated blocks of the last case
        regs = GPRS if mode == "long64" else GPRS32
        for i, v in enumerate(case.regs):
            uc.reg_write(regs[i], v)
        uc.reg_write(X.UC_X86_REG_EFLAGS, case.eflags)
        if form.vec and mode != "real16":
            for i in range(16 if mode == "long64" else 8):
                uc.reg_write(XMMS[i], case.xmm[i])
            for i in range(8):
                uc.reg_write(MMS[i], (case.mm[i], 0xFFFF))
        try:
            if form.rep:
                uc.emu_start(CODE, CODE + len(case.code), count=100000)
            else:
                uc.emu_start(CODE, 0xFFFFF, count=1)
        except UcError as e:
            if self.exc is None:
                return Outcome(exc=-1, failed=True, outs=[(0, 0, int(e.errno))])
        if self.exc is not None:
            return Outcome(exc=self.exc)
        pc = uc.reg_read(X.UC_X86_REG_RIP if mode == "long64" else X.UC_X86_REG_EIP)
        out = Outcome(regs=[uc.reg_read(r) for r in regs[:len(case.regs)]], rip=pc,
                      eflags=uc.reg_read(X.UC_X86_REG_EFLAGS),
                      data=bytes(uc.mem_read(DATA, DATA_SIZE)),
                      stack=bytes(uc.mem_read(STACK, STACK_SIZE)), outs=self.outs)
        if form.vec:
            out.xmm = [uc.reg_read(r) for r in XMMS[:16 if mode == "long64" else 8]]
            out.mm = [uc.reg_read(r)[0] for r in MMS]
        return out


_MACHINES: dict[str, _UcMachine] = {}


def run_unicorn(mode: str, case: Case, form: Form) -> Outcome:
    if mode not in _MACHINES:
        _MACHINES[mode] = _UcMachine(mode)
    out = _MACHINES[mode].run(case, form)
    if out.exc is not None:  # unicorn keeps exception state across runs: start afresh
        del _MACHINES[mode]
    return out


# --- emulator side --------------------------------------------------------------------
def run_emulator(mode: str, case: Case, form: Form) -> Outcome:
    ops = RamOps(mode, mem=bytearray(MEM_SIZE))
    ops.mem[CODE:CODE + len(case.code)] = case.code
    ops.mem[DATA:DATA + DATA_SIZE] = case.data
    ops.mem[STACK:STACK + STACK_SIZE] = case.stack
    ops.regs[:len(case.regs)] = case.regs
    ops.xmm = [v.to_bytes(16, "little") + bytes(16) for v in case.xmm]
    ops.mm = list(case.mm)
    ops.pio_in = pio_value
    eflags = case.eflags
    for _ in range(64):  # a REP string re-enters until rCX == 0 advances RIP
        ctxt = make_ctxt(ops, rip=CODE, eflags=eflags)
        res = run_insn(ctxt)
        if res.rc == EMULATION_FAILED:
            return Outcome(failed=True)
        if ctxt.have_exception:
            return Outcome(exc=ctxt.exception.vector)
        assert res.rc == EMULATION_OK
        eflags = ctxt.eflags
        if not (ctxt.rep_prefix and ctxt.d & String) or ctxt.eip != CODE:
            break
    n = len(case.regs)
    out = Outcome(regs=list(ops.regs[:n]), rip=ctxt.eip, eflags=ctxt.eflags,
                  data=bytes(ops.mem[DATA:DATA + DATA_SIZE]),
                  stack=bytes(ops.mem[STACK:STACK + STACK_SIZE]),
                  outs=[(p, s, int.from_bytes(v, "little")) for p, s, v in ops.pio_outs])
    if form.vec:
        out.xmm = [int.from_bytes(x[:16], "little") for x in ops.xmm[:16 if mode == "long64"
                                                                      else 8]]
        out.mm = list(ops.mm)
    return out


_CS = {m: Cs(CS_ARCH_X86, cm) for m, cm in (("real16", CS_MODE_16), ("prot32", CS_MODE_32),
                                           ("long64", CS_MODE_64))}
for _md in _CS.values():
    _md.detail = True


def sdm_undefined(mode: str, case: Case) -> int:
    """The status flags this case's instruction leaves undefined (kvmsim/scenario/undefined_flags.py,
    the same table `kvmsim diff` uses), with its real count for shifts and rotates (imm8, 1 or CL)."""
    insn = next(_CS[mode].disasm(case.code, CODE, 1), None)
    eff = effect_of(insn, case.regs[1]) if insn is not None else None
    return eff.undefined if eff is not None else 0


def compare(form: Form, mode: str, case: Case) -> list[str]:
    """Run both sides; return human-readable mismatches (empty = agree)."""
    hw, em = run_unicorn(mode, case, form), run_emulator(mode, case, form)
    if em.failed:
        return [f"emulator failed (EMULATION_FAILED) on {case.code.hex()}"]
    if hw.failed:
        return [f"unicorn error {hw.outs} on {case.code.hex()}"]
    if hw.exc is not None or em.exc is not None:
        if form.align16 and hw.exc is None and em.exc == 13 and case.regs[3] % 16:
            return []  # oracle gap: QEMU TCG does not enforce MOVAPS/MOVDQA alignment
        return [] if hw.exc == em.exc else [f"exception: hw={hw.exc} emu={em.exc}"]
    diffs = []
    mask = (1 << width(mode)) - 1
    for i, (a, b) in enumerate(zip(hw.regs, em.regs)):
        if a & mask != b & mask:
            diffs.append(f"reg{i}: hw={a:#x} emu={b:#x}")
    if hw.rip != em.rip:
        diffs.append(f"rip: hw={hw.rip:#x} emu={em.rip:#x}")
    fm = CMP_FLAGS & ~(sdm_undefined(mode, case) | form.kvm_divergence)
    if hw.eflags & fm != em.eflags & fm:
        diffs.append(f"eflags: hw={hw.eflags:#x} emu={em.eflags:#x} (mask {fm:#x})")
    if hw.data != em.data:
        off = next(i for i in range(DATA_SIZE) if hw.data[i] != em.data[i])
        diffs.append(f"data differs at {DATA + off:#x}")
    if hw.stack != em.stack:
        off = next(i for i in range(STACK_SIZE) if hw.stack[i] != em.stack[i])
        diffs.append(f"stack differs at {STACK + off:#x}")
    if hw.xmm != em.xmm or hw.mm != em.mm:
        diffs.append("vector registers differ")
    if hw.outs != em.outs:
        diffs.append(f"port writes: hw={hw.outs} emu={em.outs}")
    return diffs
