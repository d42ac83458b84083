"""Exception delivery by the silicon through a 64-bit IDT gate with an IST index, and a #PF raised
while delivering another exception (kvm-unit-tests eventinj "DE PF exceptions"): #DE pushes its
frame onto a read-only page, the CPU takes #PF instead (table 6-5: contributory then #PF is
handled serially), with CR2 at the page written, on the IST1 stack of the 64-bit TSS (SDM figure
8-11: IST1 at offset 0x24); the #PF handler makes the page writable and IRET re-runs the DIV,
whose #DE is then delivered on the original stack.  Differential: the same guest on /dev/kvm."""

from __future__ import annotations

import pytest

from backends import BACKENDS
from kvmsim.realkvm.backend import vendor_module
from nativecase import reported, run

GUEST = """
        SET_IDT_HANDLER 0, de_handler
        SET_IDT_HANDLER 14, pf_handler
        movq    $0x70000, 0x2824            # TSS.IST1 (the boot TSS is at 0x2800)
        orb     $1, 0x3000 + 14 * 16 + 4    # the #PF gate uses IST1
        andq    $~2, 0x6008                 # the 2 MiB page at 2 MiB: read-only (CR0.WP=1)
        invlpg  0x2ff000
        movq    %rsp, %rbp
        movq    $0x300000, %rsp
        xorl    %edx, %edx
        movl    $1, %eax
        xorl    %ecx, %ecx
        divl    %ecx
        movq    %rbp, %rsp
        jmp     done

pf_handler:
        movq    %rsp, %rax
        outl    %eax, $0xe0                 # on IST1: 0x70000 - 6 * 8
        movq    (%rsp), %rax
        outl    %eax, $0xe0                 # error code: write to a present page
        movq    %cr2, %rax
        andl    $~0xfff, %eax
        outl    %eax, $0xe0                 # the page the #DE frame went to
        orq     $2, 0x6008
        invlpg  0x2ff000
        addq    $8, %rsp
        iretq

de_handler:
        movq    %rsp, %rax
        outl    %eax, $0xe0                 # on the interrupted stack: 0x300000 - 5 * 8
        addq    $2, (%rsp)                  # past the 2-byte DIV
        iretq
done:
"""


MEMORY = [{"gpa": 0, "size": 0x400000}]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fault_while_delivering_uses_ist_and_sets_cr2(backend: str) -> None:
    if backend == "kvm" and vendor_module() == "kvm_pvm":
        # kvm_pvm artefact: it delivers guest exceptions itself and shuts the guest down when
        # that delivery faults, where hardware delivers the #PF (eventinj's "DE PF exceptions").
        assert run(GUEST, backend, memory=MEMORY).stop.reason == "shutdown"
        return
    assert reported(GUEST, backend, memory=MEMORY) == [0x70000 - 48, 3, 0x2FF000, 0x300000 - 40]


@pytest.mark.parametrize("backend", BACKENDS)
def test_de_delivered_normally_when_the_stack_is_writable(backend: str) -> None:
    """The same guest with the page left writable: no #PF, #DE's frame on the interrupted stack."""
    assert reported(GUEST.replace("andq    $~2, 0x6008", "nop"), backend, memory=MEMORY) == [0x300000 - 40]
