"""SMSW with a register operand stores CR0 (through its read shadow) at the instruction's operand
size: 0x66 makes real mode's 16-bit SMSW a 32-bit one that stores all of CR0's low 32 bits, CD
(bit 30) included (kvm-unit-tests realmode "smsw"); a 16-bit SMSW leaves the register's upper
bits alone.  Differential: the same guest on /dev/kvm."""

from __future__ import annotations

import pytest

from backends import BACKENDS
from nativecase import reported

# CR0.CD set for the SMSW (a host-owned bit: read through the shadow), then restored.
BODY = """
        movl    %cr0, %ebx
        movl    %ebx, %ecx
        orl     $0x40000000, %ebx
        movl    %ebx, %cr0
        movl    $0x12345678, %eax
        smswl   %eax
        movl    $0x12345678, %edx
        smsww   %dx
        movl    %ecx, %cr0
        subl    %ebx, %eax
        outl    %eax, $0xe0                 # 0: all of CR0's low 32 bits
        movl    %ebx, %eax
        andl    $0xffff, %eax
        orl     $0x12340000, %eax
        subl    %edx, %eax
        outl    %eax, $0xe0                 # 0: the low 16 bits only, the rest kept
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["real16", "prot32"])
def test_smsw_register_operand_size(mode: str, backend: str) -> None:
    assert reported(BODY, backend, mode=mode) == [0, 0]
