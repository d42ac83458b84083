"""Random guests for the campaign (`make fuzz-guests`): one built template per mode, random bytes patched in.

Each guest is the template below with up to MAX_LEN random bytes at the end of its slot:

    preamble   a handler for every vector 0-255 (IVT in real16, IDT otherwise) that reports the
               vector with `outb %al, $VECTOR_PORT` and halts (interrupt gates: IF stays 0); registers pointing at RAM and MMIO
               so random memory operands reach both; then a jump into the slot
    slot       NOPs, then the random bytes (right-aligned, so the trailer follows them at once)
    trailer    `movb $0x41, %al; outb %al, $TRAILER_PORT; hlt`: the run reached the end of the
               random bytes.  Handlers and trailer end in HLT bytes, never a jump back: a loop
               back into the trailer would jump into the middle of whatever instruction random
               bytes made of it (a real bug class, but one the template should not manufacture)

The template is built once per mode by guest_build (the same path `kvmsim run --guest` takes) and
the bytes are patched into the built image, so a campaign does not run the assembler per guest.
Guests are a pure function of (seed, mode, index).
"""

from __future__ import annotations

import dataclasses
import functools
import random

from kvmsim.scenario.guest_build import GuestImage, build_guest
from kvmsim.scenario.schema import Scenario

MODES = ("real16", "prot32", "long64")
MAX_LEN = 16            # random bytes per guest: 1..MAX_LEN
VECTOR_PORT = 0xE8      # exception handlers: OUT of the vector number here, then HLT
TRAILER_PORT = 0xE9     # trailer: OUT of TRAILER_BYTE here, then HLT
TRAILER_BYTE = 0x41
PIO_DX = 0x80           # DX for random IN/OUT DX (a port no device claims)
MMIO_BASE = 0xD0000000  # no memslot: random accesses through RBX/RDI exit as MMIO (prot32/long64)
SCRATCH = {"real16": 0x8000, "prot32": 0x180000, "long64": 0x180000}   # RAM for RSI/RBP

SOURCE = r"""
        .include "kvmsim.inc"
        GUEST_ENTRY
        xorl    %ecx, %ecx                      # every vector -> fuzz_vec0 + 8 * vector
1:      movl    %ecx, kvmsim_arg
        movl    %ecx, %eax
        shll    $3, %eax
        addl    $fuzz_vec0, %eax
        movl    %eax, kvmsim_arg2
        call    kvmsim_set_gate_arg
        incl    %ecx
        cmpl    $256, %ecx
        jb      1b
.if KVMSIM_MODE_REAL16
        movl    $FUZZ_SCRATCH, %ebx             # real mode reaches no MMIO with DS = 0
        movl    $FUZZ_SCRATCH + 0x100, %edi
.else
        movl    $FUZZ_MMIO, %ebx
        movl    $FUZZ_MMIO + 0x1000, %edi
.endif
        movl    $FUZZ_SCRATCH + 0x200, %esi
        movl    $FUZZ_SCRATCH + 0x800, %ebp
        movl    $4, %ecx
        movl    $FUZZ_PIO_DX, %edx
        xorl    %eax, %eax                      # also clears the arithmetic flags
        jmp     fuzz_slot

        .balign 8
fuzz_vec0:
        .set    v, 0
        .rept   256
        movb    $v, %al
        outb    %al, $FUZZ_VECTOR_PORT
        hlt
        .balign 8, 0xf4
        .set    v, v + 1
        .endr

        .globl  fuzz_slot
fuzz_slot:
        .fill   FUZZ_MAX_LEN, 1, 0x90
        .globl  fuzz_trailer
fuzz_trailer:
        movb    $FUZZ_TRAILER_BYTE, %al
        outb    %al, $FUZZ_TRAILER_PORT
        .fill   16, 1, 0xf4                     # HLTs: no jump back, so nothing lands mid-instruction
"""


def defines(mode: str) -> dict[str, int]:
    return {"FUZZ_MAX_LEN": MAX_LEN, "FUZZ_VECTOR_PORT": VECTOR_PORT, "FUZZ_TRAILER_PORT": TRAILER_PORT,
            "FUZZ_TRAILER_BYTE": TRAILER_BYTE, "FUZZ_PIO_DX": PIO_DX, "FUZZ_MMIO": MMIO_BASE,
            "FUZZ_SCRATCH": SCRATCH[mode]}


@functools.lru_cache(maxsize=None)
def template(mode: str) -> GuestImage:
    """The built template (cached per process; guest_build caches it on disk too)."""
    return build_guest(None, SOURCE, mode, display_name="<fuzz-guest>", defines=defines(mode))


def guest_bytes(seed: int, mode: str, index: int) -> bytes:
    """The random bytes of guest `index`: 1..MAX_LEN bytes from a generator seeded by (seed, mode, index)."""
    rng = random.Random(f"kvmsim-fuzz/{seed}/{mode}/{index}")
    return rng.randbytes(rng.randint(1, MAX_LEN))


def guest_image(mode: str, code: bytes) -> GuestImage:
    """The template with `code` right before the trailer."""
    if not 0 < len(code) <= MAX_LEN:
        raise ValueError(f"a random guest has 1..{MAX_LEN} bytes, not {len(code)}")
    t = template(mode)
    end = t.symbols["fuzz_trailer"] - t.load_addr
    img = bytearray(t.image)
    img[end - len(code):end] = code
    return dataclasses.replace(t, image=bytes(img))


def scenario(mode: str, name: str, max_exits: int, wall_seconds: float) -> Scenario:
    """The machine a random guest runs in: default memory and devices (serial, debug-exit), the limits."""
    return Scenario.model_validate({
        "name": name, "description": "random guest (kvmsim.fuzz)",
        "guest": {"asm": SOURCE, "mode": mode, "defsym": defines(mode)},
        "limits": {"max_exits": max_exits, "wall_seconds": wall_seconds,
                   "max_guest_insns": None}})   # the campaign's own budgets (campaign.Limits), uncounted
