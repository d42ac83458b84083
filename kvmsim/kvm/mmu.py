"""Model of arch/x86/kvm/mmu/mmu.c and the EPT exit handlers of vmx.c that feed it.

A GPA with no memslot is MMIO.  Its first access takes an EPT violation; with MMIO
caching on, KVM then installs an MMIO SPTE (a deliberately misconfigured EPT entry) so
later accesses exit as EPT misconfig and skip the page walk.  Either way the access is
emulated with EMULTYPE_PF.
"""

from __future__ import annotations

from kvmsim.hw.paging import (PFERR_FETCH_MASK, PFERR_GUEST_FINAL_MASK, PFERR_GUEST_PAGE_MASK,
                              PFERR_PRESENT_MASK, PFERR_RSVD_MASK, PFERR_USER_MASK, PFERR_WRITE_MASK)
from kvmsim.hw.vmcs import (EPT_VIOLATION_ACC_INSTR, EPT_VIOLATION_ACC_READ, EPT_VIOLATION_ACC_WRITE,
                            EPT_VIOLATION_GVA_TRANSLATED, EPT_VIOLATION_RWX_MASK)
from kvmsim.kvm import mmu_shadow
from kvmsim.kvm.emulate.codes import EMULTYPE_PF as _EMULTYPE_PF
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_emulate import x86_emulate_instruction
from kvmsim.kvm.x86_exception import kvm_skip_emulated_instruction
from kvmsim.probe import PROBES, kfunc, tracepoint

RET_PF_CONTINUE, RET_PF_RETRY, RET_PF_EMULATE, RET_PF_WRITE_PROTECTED, RET_PF_INVALID, RET_PF_FIXED, \
    RET_PF_SPURIOUS = range(7)


@kfunc()
def handle_ept_violation(vcpu: KvmVcpu) -> int:
    """Reference §4.1: build a #PF-style error code from the qualification, then the MMU."""
    q = vcpu.hw.vmcs.exit_qualification
    gpa = vcpu.hw.vmcs.guest_physical_address
    if PROBES.enabled:
        tracepoint("kvm_page_fault", vcpu_id=vcpu.vcpu_id, guest_rip=vcpu.hw.reg("rip"), fault_address=gpa,
                   error_code=q)
    error_code = PFERR_USER_MASK if q & EPT_VIOLATION_ACC_READ else 0  # "user" encodes a read for EPT
    error_code |= PFERR_WRITE_MASK if q & EPT_VIOLATION_ACC_WRITE else 0
    error_code |= PFERR_FETCH_MASK if q & EPT_VIOLATION_ACC_INSTR else 0
    error_code |= PFERR_PRESENT_MASK if q & EPT_VIOLATION_RWX_MASK else 0
    error_code |= PFERR_GUEST_FINAL_MASK if q & EPT_VIOLATION_GVA_TRANSLATED else PFERR_GUEST_PAGE_MASK
    vcpu.arch.exit_qualification = q
    return kvm_mmu_page_fault(vcpu, gpa, error_code)


@kfunc()
def handle_ept_misconfig(vcpu: KvmVcpu) -> int:
    """Reference §4.2: the ioeventfd fast path (no decode), else MMIO emulation."""
    gpa = vcpu.hw.vmcs.guest_physical_address
    bus = vcpu.kvm.buses["KVM_FAST_MMIO_BUS"]
    if bus.ranges and bus.write(gpa, 0, b"") == 0:   # an empty bus takes nothing
        if PROBES.enabled:
            tracepoint("kvm_fast_mmio", gpa=gpa)
        return kvm_skip_emulated_instruction(vcpu)
    return kvm_mmu_page_fault(vcpu, gpa, PFERR_RSVD_MASK)


def handle_mmio_page_fault(vcpu: KvmVcpu, addr: int) -> int:
    """The MMIO SPTE is still there (no memslot generation change in this model): emulate."""
    return RET_PF_EMULATE


def kvm_handle_noslot_fault(vcpu: KvmVcpu, gpa: int) -> int:
    """No memslot: cache the MMIO info and, with MMIO caching, install an MMIO SPTE."""
    if vcpu.kvm.params.mmio_caching:
        if not vcpu.kvm.params.enable_ept:       # an unpaged guest on the shadow MMU's nonpaging root
            mmu_shadow.mark_mmio_spte(vcpu, gpa, frozenset())
            return RET_PF_EMULATE
        vcpu.hw.ept_mmio_gfns.add(gpa >> 12)
    return RET_PF_EMULATE


def kvm_mmu_do_page_fault(vcpu: KvmVcpu, gpa: int, error_code: int) -> int:
    if not vcpu.hw.gpa_is_ram(gpa):
        return kvm_handle_noslot_fault(vcpu, gpa)
    if error_code & PFERR_WRITE_MASK and vcpu.hw.gpa_is_readonly(gpa):
        return RET_PF_EMULATE   # kvm_handle_error_pfn: KVM_PFN_ERR_RO_FAULT (no MMIO SPTE for a ROM)
    return RET_PF_FIXED  # Simplified: RAM memslots are mapped up front, so the fault is spurious-fixed.


EMULTYPE_PF = int(_EMULTYPE_PF)


@kfunc()
def kvm_handle_page_fault(vcpu: KvmVcpu, error_code: int, fault_address: int) -> int:
    """A #PF VM exit (shadow paging): the 32-bit error code, then the MMU (no async page faults here)."""
    error_code &= 0xFFFF_FFFF
    if PROBES.enabled:
        tracepoint("kvm_page_fault", vcpu_id=vcpu.vcpu_id, guest_rip=vcpu.hw.reg("rip"), fault_address=fault_address,
                   error_code=error_code)
    return kvm_mmu_page_fault(vcpu, fault_address, error_code)


@kfunc("cr2_or_gpa", "error_code")
def kvm_mmu_page_fault(vcpu: KvmVcpu, cr2_or_gpa: int, error_code: int, insn: bytes | None = None) -> int:
    """Reference §4.4: MMIO via the RSVD bit, else the page-fault handler; emulate on RET_PF_EMULATE.
    Without EPT a paging guest's faults go to the shadow MMU (mmu_shadow.py): CR2 is a GVA there."""
    if mmu_shadow.is_shadow_mmu(vcpu):
        return _shadow_page_fault(vcpu, cr2_or_gpa, error_code, insn)
    r = RET_PF_INVALID
    if error_code & PFERR_RSVD_MASK:
        r = handle_mmio_page_fault(vcpu, cr2_or_gpa)
    if r == RET_PF_INVALID:
        vcpu.stat.pf_taken += 1
        r = kvm_mmu_do_page_fault(vcpu, cr2_or_gpa, error_code)
    return _page_fault_done(vcpu, r, cr2_or_gpa, EMULTYPE_PF, insn)


def _shadow_page_fault(vcpu: KvmVcpu, gva: int, error_code: int, insn: bytes | None) -> int:
    """kvm_mmu_page_fault with an indirect (shadow) root, in the kernel's order."""
    emulation_type = EMULTYPE_PF
    r = RET_PF_INVALID
    if error_code & PFERR_RSVD_MASK:
        r = mmu_shadow.handle_mmio_page_fault(vcpu, gva)
        if r == RET_PF_EMULATE:
            return x86_emulate_instruction(vcpu, gva, emulation_type, insn)
    if r == RET_PF_INVALID:
        vcpu.stat.pf_taken += 1
        r, extra = mmu_shadow.paging_page_fault(vcpu, gva, error_code)
        emulation_type |= extra
    if r == RET_PF_WRITE_PROTECTED:
        r, extra = mmu_shadow.kvm_mmu_write_protect_fault(vcpu, gva, error_code)
        emulation_type |= extra
    return _page_fault_done(vcpu, r, gva, emulation_type, insn)


def _page_fault_done(vcpu: KvmVcpu, r: int, cr2_or_gpa: int, emulation_type: int, insn: bytes | None) -> int:
    """kvm_mmu_page_fault's end, either MMU: count the outcome; RET_PF_EMULATE goes to the emulator."""
    if r == RET_PF_FIXED:
        vcpu.stat.pf_fixed += 1
    if r != RET_PF_EMULATE:
        return 1
    vcpu.stat.pf_emulate += 1
    return x86_emulate_instruction(vcpu, cr2_or_gpa, emulation_type, insn)


# ---------------------------------------------------------------- INVPCID (issue 14; INVLPG is mmu_shadow's)

@kfunc("gva", "pcid")
def kvm_mmu_invpcid_gva(vcpu: KvmVcpu, gva: int, pcid: int) -> None:
    """INVPCID type 0: the address in the current PCID (or another one: all roots are dropped).
    Simplified: every root's entries for the address go, whatever the PCID."""
    mmu_shadow.kvm_mmu_invlpg(vcpu, gva)
