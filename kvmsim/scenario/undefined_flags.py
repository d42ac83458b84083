"""Which status flags an instruction writes and which it leaves undefined: Intel SDM Vol. 1
Appendix A, Table A-2 "EFLAGS Cross-Reference", with each instruction's "Flags Affected"
paragraph (Vol. 2) for the count-dependent shifts and rotates.

Only the six status flags (CF PF AF ZF SF OF) matter here: they are what an instruction may
leave undefined.  Table A-2's codes map to two masks per mnemonic (capstone's spelling):

    M, 0, 1, R  -> `written`    (the result is architectural)
    -           -> `undefined`  (the CPU may leave anything; hardware and emulators differ)
    blank       -> neither      (the flag passes through unchanged)

`kvmsim diff` masks a flag only when the last instruction that touched it left it undefined
(last_writer.py); the emulator's differential tests (tests/emulate) mask with the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kvmsim.kvm.emulate.codes import (X86_EFLAGS_AF, X86_EFLAGS_CF, X86_EFLAGS_OF, X86_EFLAGS_PF,
                                      X86_EFLAGS_SF, X86_EFLAGS_ZF)

CF, PF, AF, ZF, SF, OF = X86_EFLAGS_CF, X86_EFLAGS_PF, X86_EFLAGS_AF, X86_EFLAGS_ZF, X86_EFLAGS_SF, X86_EFLAGS_OF
STATUS = CF | PF | AF | ZF | SF | OF
FLAG_NAMES = ((CF, "CF"), (PF, "PF"), (AF, "AF"), (ZF, "ZF"), (SF, "SF"), (OF, "OF"))


def flag_names(mask: int) -> str:
    """"AF OF" for AF|OF, in EFLAGS bit order."""
    return " ".join(name for bit, name in FLAG_NAMES if mask & bit)


@dataclass(frozen=True)
class FlagEffect:
    """One row of Table A-2: the status flags an instruction writes and those it leaves undefined."""

    written: int = 0
    undefined: int = 0

    @property
    def touched(self) -> int:
        return self.written | self.undefined


NONE = FlagEffect()
# Count rules take the masked count (count & 0x1f, & 0x3f with REX.W) and the operand size in bits.
CountRule = Callable[[int, int], FlagEffect]


def _m(written: int = 0, undefined: int = 0) -> FlagEffect:
    return FlagEffect(written, undefined)


# ---------------------------------------------------------------- count-dependent rows
# SAL/SAR/SHL/SHR: no flag changes for a zero count; AF undefined for any other; OF defined
# for a 1-bit shift only; CF undefined for SHL/SHR when the count reaches the operand size.
def _shl_shr(count: int, bits: int) -> FlagEffect:
    if count == 0:
        return NONE
    cf_undef = count >= bits
    return FlagEffect(SF | ZF | PF | (0 if cf_undef else CF) | (OF if count == 1 else 0),
                      AF | (CF if cf_undef else 0) | (0 if count == 1 else OF))


def _sar(count: int, bits: int) -> FlagEffect:
    if count == 0:
        return NONE
    return FlagEffect(SF | ZF | PF | CF | (OF if count == 1 else 0), AF | (0 if count == 1 else OF))


# ROL/ROR/RCL/RCR: CF for a non-zero count, OF for a 1-bit rotate, undefined beyond;
# SF ZF AF PF are never touched.  (The size modulus of RCL/RCR does not matter: the SDM
# tests the masked count.)
def _rotate(count: int, bits: int) -> FlagEffect:
    if count == 0:
        return NONE
    return FlagEffect(CF | (OF if count == 1 else 0), 0 if count == 1 else OF)


# SHLD/SHRD: as a shift, but a count above the operand size leaves every status flag undefined.
def _double_shift(count: int, bits: int) -> FlagEffect:
    if count == 0:
        return NONE
    if count > bits:
        return FlagEffect(0, STATUS)
    return FlagEffect(CF | SF | ZF | PF | (OF if count == 1 else 0), AF | (0 if count == 1 else OF))


COUNT_RULES: dict[str, CountRule] = {
    "shl": _shl_shr, "sal": _shl_shr, "shr": _shl_shr, "sar": _sar,
    "rol": _rotate, "ror": _rotate, "rcl": _rotate, "rcr": _rotate,
    "shld": _double_shift, "shrd": _double_shift,
}


# ---------------------------------------------------------------- fixed rows (Table A-2)
_ARITH = _m(STATUS)
_LOGIC = _m(OF | SF | ZF | PF | CF, AF)            # AND OR XOR TEST: OF CF cleared, AF undefined
_MUL = _m(OF | CF, SF | ZF | AF | PF)
_DIV = _m(0, STATUS)
_BITSCAN = _m(ZF, CF | OF | SF | AF | PF)
_BITTEST = _m(CF, OF | SF | AF | PF)               # ZF unaffected
_ASCII_ADJ = _m(AF | CF, OF | SF | ZF | PF)         # AAA AAS
_ASCII_MULDIV = _m(SF | ZF | PF, OF | AF | CF)      # AAM AAD
_DECIMAL_ADJ = _m(CF | AF | SF | ZF | PF, OF)       # DAA DAS
_CONTROL_REG = _m(0, STATUS)                        # MOV to/from CRn, DRn
_BMI_AF_PF = _m(SF | ZF | OF | CF, AF | PF)         # ANDN BLSI BLSMSK BLSR BZHI

FLAG_EFFECTS: dict[str, FlagEffect] = {
    # ---- arithmetic: every status flag defined
    "add": _ARITH, "adc": _ARITH, "sub": _ARITH, "sbb": _ARITH, "cmp": _ARITH, "neg": _ARITH,
    "xadd": _ARITH, "cmpxchg": _ARITH,
    "inc": _m(OF | SF | ZF | AF | PF), "dec": _m(OF | SF | ZF | AF | PF),
    "cmpsb": _ARITH, "cmpsw": _ARITH, "cmpsd": _ARITH, "cmpsq": _ARITH,
    "scasb": _ARITH, "scasw": _ARITH, "scasd": _ARITH, "scasq": _ARITH,
    # ---- logic
    "and": _LOGIC, "or": _LOGIC, "xor": _LOGIC, "test": _LOGIC,
    # ---- multiply, divide
    "mul": _MUL, "imul": _MUL, "div": _DIV, "idiv": _DIV,
    # ---- bit scan and bit test
    "bsf": _BITSCAN, "bsr": _BITSCAN,
    "bt": _BITTEST, "bts": _BITTEST, "btr": _BITTEST, "btc": _BITTEST,
    "lzcnt": _m(ZF | CF, OF | SF | PF | AF), "tzcnt": _m(ZF | CF, OF | SF | PF | AF),
    "popcnt": _ARITH,
    # ---- BMI1/BMI2 (Vol. 2 "Flags Affected")
    "andn": _BMI_AF_PF, "blsi": _BMI_AF_PF, "blsmsk": _BMI_AF_PF, "blsr": _BMI_AF_PF, "bzhi": _BMI_AF_PF,
    "bextr": _m(ZF | CF | OF, AF | SF | PF),
    # ---- BCD
    "aaa": _ASCII_ADJ, "aas": _ASCII_ADJ, "aam": _ASCII_MULDIV, "aad": _ASCII_MULDIV,
    "daa": _DECIMAL_ADJ, "das": _DECIMAL_ADJ,
    # ---- flag instructions and loads of the whole set
    "clc": _m(CF), "stc": _m(CF), "cmc": _m(CF), "sahf": _m(SF | ZF | AF | PF | CF),
    "popf": _ARITH, "popfd": _ARITH, "popfq": _ARITH,
    # ---- compares that write the status flags from their result
    "comiss": _ARITH, "comisd": _ARITH, "ucomiss": _ARITH, "ucomisd": _ARITH,
    "ptest": _ARITH, "rdrand": _ARITH, "rdseed": _ARITH,
    "adcx": _m(CF), "adox": _m(OF),
    "cmpxchg8b": _m(ZF), "cmpxchg16b": _m(ZF),
    "lar": _m(ZF), "lsl": _m(ZF), "verr": _m(ZF), "verw": _m(ZF), "arpl": _m(ZF),
}
# `mov` to or from a control or debug register: "The OF, SF, ZF, AF, PF, and CF flags are undefined."
CONTROL_REGISTER_MOVE = _CONTROL_REG

# Instructions that leave the six status flags alone (Table A-2 blank rows, and moves).
NO_STATUS_FLAGS: frozenset[str] = frozenset((
    "mov", "movabs", "movzx", "movsx", "movsxd", "movbe", "lea", "xchg", "bswap", "xlatb",
    "push", "pop", "pushf", "pushfd", "pushfq", "nop", "pause", "hlt", "in", "out",
    "cli", "sti", "cld", "std", "lahf", "cbw", "cwde", "cdqe", "cwd", "cdq", "cqo", "not",
    "movsb", "movsw", "movsd", "movsq", "stosb", "stosw", "stosd", "stosq",
    "lodsb", "lodsw", "lodsd", "lodsq", "insb", "insw", "insd", "outsb", "outsw", "outsd",
    "cpuid", "rdmsr", "wrmsr", "rdtsc", "rdtscp", "rdpmc", "lgdt", "lidt", "lldt", "ltr",
    "sgdt", "sidt", "sldt", "str", "smsw", "lmsw", "clts", "invlpg", "invd", "wbinvd",
    "lfence", "sfence", "mfence", "clflush", "prefetcht0", "prefetcht1", "prefetcht2", "prefetchnta",
    "movd", "movq", "movups", "movaps", "movupd", "movapd", "movdqa", "movdqu", "movnti",
    "fxsave", "fxrstor", "xsave", "xrstor", "xgetbv", "xsetbv", "enter", "leave",
    "loop", "loope", "loopne", "jecxz", "jrcxz", "jcxz",
    *(f"{p}{cc}" for p in ("j", "set", "cmov")
      for cc in ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")),
))
# Instructions after which control need not come from the one before (the walk stops there).
LEAVES_STRAIGHT_LINE: frozenset[str] = frozenset((
    "jmp", "ljmp", "call", "lcall", "ret", "retf", "iret", "iretd", "iretq", "int", "int1", "int3",
    "into", "syscall", "sysret", "sysenter", "sysexit", "ud0", "ud1", "ud2", "vmcall", "vmmcall",
    "rsm",
))


def flag_effect(mnemonic: str, count: int | None = None, bits: int | None = None) -> FlagEffect | None:
    """The row for `mnemonic` (capstone spelling); count rules need the masked count and operand
    size.  None: not in the table, or a count-dependent row without its count."""
    if (rule := COUNT_RULES.get(mnemonic)) is not None:
        return rule(count, bits) if count is not None and bits is not None else None
    if mnemonic in NO_STATUS_FLAGS:
        return NONE
    return FLAG_EFFECTS.get(mnemonic)


def masked_count(count: int, bits: int) -> int:
    """The count the CPU uses: 5 bits, 6 with a 64-bit operand (SDM SAL/SAR/SHL/SHR "Operation")."""
    return count & (0x3F if bits == 64 else 0x1F)
