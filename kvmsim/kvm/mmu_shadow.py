"""Model of the shadow MMU (arch/x86/kvm/mmu/mmu.c, paging_tmpl.h) KVM uses when enable_ept=0.

KVM shadows each guest page table it walks through with a `kvm_mmu_page`; upper-level ones
(level > 1) are write-tracked, so a guest write to them takes a #PF exit and is emulated
(kvm_mmu_track_write zaps the shadow entry it changes; three such writes without a fault through
the page in between count as write flooding and zap the page).  Last-level tables may go unsync.

    #PF exit ─ handle_exception_nmi ─ kvm_handle_page_fault ─ kvm_mmu_page_fault
       ├─ RSVD and an MMIO SPTE ─ handle_mmio_page_fault ─ emulate (EMULTYPE_PF)
       └─ paging_page_fault (FNAME(page_fault)): walk the guest's tables
             ├─ the guest's tables refuse ─ inject #PF (CR2, error code) ─ RET_PF_RETRY
             ├─ write to a write-tracked gfn ─ RET_PF_WRITE_PROTECTED ─ kvm_mmu_write_protect_fault
             │     ─ emulate (EMULTYPE_PF | ALLOW_RETRY_PF): a non-page-table-writing instruction is
             │       unprotected and retried instead (kvm_mmu_unprotect_gfn_and_retry)
             ├─ no memslot ─ kvm_handle_noslot_fault: MMIO info cached, MMIO SPTE ─ emulate (EMULTYPE_PF)
             └─ RAM ─ FNAME(fetch): shadow the walked tables, RET_PF_FIXED
Simplified: one vCPU's view (the VM's shadow pages kept with it); the shadow pages of a new root are
made for every table reachable from it at the root load, as if the guest had touched each mapping
(KVM makes them at the first #PF through each, which the silicon does not model); unsync last-level
tables take no exit at all; guest accessed/dirty bits are left to the silicon's walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmsim.hw import paging
from kvmsim.kvm.emulate.codes import EMULTYPE_ALLOW_RETRY_PF
from kvmsim.kvm.vcpu import KvmVcpu
from kvmsim.kvm.x86_exception import kvm_inject_page_fault
from kvmsim.probe import PROBES, kfunc, tracepoint

RET_PF_CONTINUE, RET_PF_RETRY, RET_PF_EMULATE, RET_PF_WRITE_PROTECTED, RET_PF_INVALID, RET_PF_FIXED, \
    RET_PF_SPURIOUS = range(7)
KVM_MMU_NUM_PREV_ROOTS = 3
_SHADOW_PAGES_MAX = 256     # bounds the walk of a new root (a guest with more tables is simplified)
_ADDR52 = 0x000F_FFFF_FFFF_F000
NONPAGING_ROOT = -1         # the direct-mapped root of an unpaged guest (nonpaging_page_fault)


@dataclass(slots=True)
class KvmMmuPage:
    """struct kvm_mmu_page of an indirect (guest-table-shadowing) page: its gfn and level."""

    gfn: int
    level: int
    write_flooding_count: int = 0


@dataclass
class ShadowMmu:
    """vcpu->arch.mmu for the shadow MMU: roots, shadow pages, MMIO SPTEs, the MMIO cache."""

    root: int | None = None                           # root_hpa, named by the guest CR3 it shadows
    paging: bool = False                              # the root shadows guest tables (else nonpaging)
    role: tuple = ()                                  # the CPU role the roots were made for (cpu_role)
    prev_roots: list[int] = field(default_factory=list)
    pages: dict[int, KvmMmuPage] = field(default_factory=dict)   # gfn -> shadow page
    mmio_sptes: dict[int, dict[int, frozenset[int]]] = field(default_factory=dict)  # root -> gva page -> tables
    mmio_gva: int | None = None                       # vcpu->arch.mmio_gva / mmio_gfn (vcpu_cache_mmio_info)
    mmio_gfn: int = 0
    last_retry_eip: int = 0
    last_retry_addr: int = 0
    stat: dict[str, int] = field(default_factory=lambda: {"mmu_pte_write": 0, "mmu_flooded": 0,
                                                          "mmu_unsync": 0, "pf_mmio_spte_created": 0,
                                                          "invlpg": 0, "mmu_recycled": 0})


def vcpu_mmu(vcpu: KvmVcpu) -> ShadowMmu:
    mmu = vcpu.arch.shadow_mmu
    if mmu is None:
        mmu = vcpu.arch.shadow_mmu = ShadowMmu()
    return mmu


def is_shadow_mmu(vcpu: KvmVcpu) -> bool:
    """Shadow paging of a paging guest (root_role.direct false); an unpaged guest is direct-mapped."""
    return not vcpu.kvm.params.enable_ept and bool(vcpu.hw.cr(0) & paging.X86_CR0_PG)


# ---------------------------------------------------------------- the guest's tables

def _geometry(hw) -> tuple[int, int, list[tuple[int, int]]]:
    """(entry width, root level, [(table gpa, level)] of the roots) for the guest's paging mode."""
    cr3, cr4, efer = hw.cr(3), hw.cr(4), hw.efer()
    if efer & paging.EFER_LMA:
        return 8, 4, [(cr3 & _ADDR52, 4)]
    if cr4 & paging.X86_CR4_PAE:     # the PDPTEs are loaded at CR3 load: the PDs are the shadowed roots
        pds = [_read_gpte(hw, (cr3 & 0xFFFF_FFE0) + 8 * i, 8) for i in range(4)]
        return 8, 2, [(e & _ADDR52, 2) for e in pds if e & 1]
    return 4, 2, [(cr3 & 0xFFFF_F000, 2)]


def _read_gpte(hw, gpa: int, size: int) -> int:
    """A guest table entry; a table outside RAM reads as not present (the walk's #PF, no traceback).
    Simplified: KVM's walker also faults there, without going through MMIO."""
    return hw.read_phys(gpa, size) if hw._host(gpa, size) else 0


def _reachable_tables(hw) -> list[tuple[int, int]]:
    """(gfn, level) of every guest table reachable from the root, breadth first, bounded."""
    width, _, todo = _geometry(hw)
    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    pse = width == 8 or hw.cr(4) & paging.X86_CR4_PSE
    while todo and len(out) < _SHADOW_PAGES_MAX:
        table, level = todo.pop(0)
        if table >> 12 in seen or not hw.gpa_is_ram(table):
            continue
        seen.add(table >> 12)
        out.append((table >> 12, level))
        if level == 1:
            continue
        for i in range(4096 // width):
            e = hw.read_phys(table + i * width, width)
            if e & 1 and not (e & 0x80 and pse):
                todo.append(((e & (_ADDR52 if width == 8 else 0xFFFF_F000)), level - 1))
    return out


def _walk(vcpu: KvmVcpu, gva: int, error_code: int) -> tuple[int, frozenset[int]]:
    """FNAME(walk_addr_generic): (gpa, gfns of the tables read); raises paging.PageFault as the walker's fault."""
    hw = vcpu.hw
    tables: set[int] = set()

    def read(gpa: int, size: int) -> int:
        tables.add(gpa >> 12)
        return _read_gpte(hw, gpa, size)
    gpa = paging.walk(read, hw.cr(0), hw.cr(3), hw.cr(4), hw.efer(), gva,
                      write=bool(error_code & paging.PFERR_WRITE_MASK), user=bool(error_code & paging.PFERR_USER_MASK),
                      fetch=bool(error_code & paging.PFERR_FETCH_MASK))
    return gpa, frozenset(tables)


# ---------------------------------------------------------------- shadow pages

def account_shadowed(vcpu: KvmVcpu, sp: KvmMmuPage) -> None:
    """Upper-level shadow pages write-track their gfn; every shadowed gfn's SPTEs go read-only.
    Simplified: a last-level table is made unsync at once (KVM does so at the guest's first write)."""
    if sp.level > 1:
        vcpu.hw.write_protect_gfn(sp.gfn, True)
    else:
        vcpu_mmu(vcpu).stat["mmu_unsync"] += 1


def unaccount_shadowed(vcpu: KvmVcpu, sp: KvmMmuPage) -> None:
    vcpu.hw.write_protect_gfn(sp.gfn, False)


def kvm_mmu_get_shadow_page(vcpu: KvmVcpu, gfn: int, level: int) -> KvmMmuPage:
    mmu = vcpu_mmu(vcpu)
    sp = mmu.pages.get(gfn)
    if sp is None:
        sp = mmu.pages[gfn] = KvmMmuPage(gfn, level)
        account_shadowed(vcpu, sp)
    return sp


def kvm_mmu_prepare_zap_page(vcpu: KvmVcpu, sp: KvmMmuPage) -> None:
    """The shadow page goes; so do the MMIO SPTEs whose walk went through its table."""
    mmu = vcpu_mmu(vcpu)
    mmu.pages.pop(sp.gfn, None)
    unaccount_shadowed(vcpu, sp)
    _zap_mmio_sptes(vcpu, lambda tables: sp.gfn in tables)


def _zap_mmio_sptes(vcpu: KvmVcpu, hit) -> None:
    mmu = vcpu_mmu(vcpu)
    for root, sptes in mmu.mmio_sptes.items():
        for page in [p for p, t in sptes.items() if hit(t)]:
            del sptes[page]
            if root == mmu.root:
                vcpu.hw.spt_mmio.discard(page)


@kfunc("pgd")
def kvm_mmu_new_pgd(vcpu: KvmVcpu, pgd: int) -> None:
    """CR3 load: switch to the root of `pgd`, a cached previous root if there is one (fast_pgd_switch),
    and shadow the tables it reaches."""
    mmu = vcpu_mmu(vcpu)
    hw = vcpu.hw
    if mmu.root != pgd:
        if mmu.root is not None:
            mmu.prev_roots.insert(0, mmu.root)
        if pgd in mmu.prev_roots:
            mmu.prev_roots.remove(pgd)
        for old in mmu.prev_roots[KVM_MMU_NUM_PREV_ROOTS:]:
            mmu.mmio_sptes.pop(old, None)              # kvm_mmu_free_roots of the evicted root
        del mmu.prev_roots[KVM_MMU_NUM_PREV_ROOTS:]
        mmu.root = pgd
        hw.spt_mmio = set(mmu.mmio_sptes.setdefault(pgd, {}))
    for gfn, level in _reachable_tables(hw):
        kvm_mmu_get_shadow_page(vcpu, gfn, level)
    hw.flush_tlb()


def kvm_mmu_reload(vcpu: KvmVcpu) -> None:
    """vcpu_enter_guest → kvm_mmu_reload: a paging guest without EPT runs on the root of its CR3, an
    unpaged one on the direct-mapped nonpaging root.  A change of paging mode resets the MMU context
    (kvm_post_set_cr0/cr4 → kvm_mmu_reset_context): every root and its SPTEs go (the shadow pages
    stay, write-tracked, as KVM keeps them until zapped)."""
    mmu = vcpu_mmu(vcpu)
    hw = vcpu.hw
    paging_on = bool(hw.cr(0) & paging.X86_CR0_PG)
    role = (paging_on, hw.efer() & paging.EFER_LMA, hw.cr(4) & (paging.X86_CR4_PAE | paging.X86_CR4_PSE))
    if role != mmu.role:          # the CPU role changed (CR0.PG, EFER.LMA, CR4.PAE/PSE): new context
        mmu.role, mmu.paging, mmu.root = role, paging_on, None
        mmu.prev_roots.clear()
        mmu.mmio_sptes.clear()
        hw.spt_mmio = set()
    want = hw.cr(3) if paging_on else NONPAGING_ROOT
    if mmu.root == want:
        return
    if paging_on:
        kvm_mmu_new_pgd(vcpu, want)
    else:
        mmu.root = NONPAGING_ROOT
        hw.spt_mmio = set(mmu.mmio_sptes.setdefault(NONPAGING_ROOT, {}))


def mark_mmio_spte(vcpu: KvmVcpu, gva: int, tables: frozenset[int]) -> None:
    """FNAME(fetch) / direct_map → mmu_set_spte on a noslot pfn: an MMIO SPTE in the current root."""
    mmu = vcpu_mmu(vcpu)
    mmu.mmio_sptes.setdefault(mmu.root, {})[gva >> 12] = tables
    vcpu.hw.spt_mmio.add(gva >> 12)
    mmu.stat["pf_mmio_spte_created"] += 1


# ---------------------------------------------------------------- faults

def vcpu_cache_mmio_info(vcpu: KvmVcpu, gva: int, gfn: int) -> None:
    mmu = vcpu_mmu(vcpu)
    mmu.mmio_gva, mmu.mmio_gfn = gva & ~0xFFF, gfn


def vcpu_match_mmio_gva(vcpu: KvmVcpu, gva: int) -> bool:
    mmu = vcpu_mmu(vcpu)
    return mmu.mmio_gva is not None and mmu.mmio_gva == gva & ~0xFFF


def handle_mmio_page_fault(vcpu: KvmVcpu, addr: int) -> int:
    """RSVD #PF: the shadow entry is an MMIO SPTE (or the MMIO cache names this gva): emulate."""
    if vcpu_match_mmio_gva(vcpu, addr):
        return RET_PF_EMULATE
    mmu = vcpu_mmu(vcpu)
    if (addr >> 12) in mmu.mmio_sptes.get(mmu.root, {}):
        try:
            gpa, _ = _walk(vcpu, addr, 0)
        except paging.PageFault:
            return RET_PF_INVALID
        vcpu_cache_mmio_info(vcpu, addr, gpa >> 12)
        if PROBES.enabled:
            tracepoint("handle_mmio_page_fault", addr=addr, gfn=gpa >> 12, access=0)
        return RET_PF_EMULATE
    return RET_PF_INVALID   # reserved bits in the guest's own entry: the walk decides


@kfunc("addr", "error_code")
def paging_page_fault(vcpu: KvmVcpu, addr: int, error_code: int) -> tuple[int, int]:
    """FNAME(page_fault) (paging64_/paging32_page_fault): (RET_PF_*, extra EMULTYPE bits)."""
    try:
        gpa, tables = _walk(vcpu, addr, error_code & ~paging.PFERR_RSVD_MASK)
    except paging.PageFault as pf:
        kvm_inject_page_fault(vcpu, addr, pf.error_code)   # kvm_inject_emulated_page_fault
        return RET_PF_RETRY, 0
    mmu = vcpu_mmu(vcpu)
    gfn = gpa >> 12
    for t in tables:                                       # shadow_page_table_clear_flood on the walk's pages
        sp = mmu.pages.get(t)
        if sp is not None:
            sp.write_flooding_count = 0
    sp = mmu.pages.get(gfn)
    if error_code & paging.PFERR_WRITE_MASK and sp is not None and sp.level > 1:
        return RET_PF_WRITE_PROTECTED, 0                   # page_fault_handle_page_track
    hw = vcpu.hw
    if not hw.gpa_is_ram(gpa):                             # kvm_handle_noslot_fault
        vcpu_cache_mmio_info(vcpu, addr, gfn)
        if not vcpu.kvm.params.mmio_caching:
            return RET_PF_EMULATE, 0
        mark_mmio_spte(vcpu, addr, tables)
        return RET_PF_EMULATE, 0
    if error_code & paging.PFERR_WRITE_MASK and hw.gpa_is_readonly(gpa):
        return RET_PF_EMULATE, 0                           # KVM_PFN_ERR_RO_FAULT
    for t in tables:                                       # FNAME(fetch): the walk's tables get shadow pages
        if t not in mmu.pages:
            kvm_mmu_get_shadow_page(vcpu, t, 1)
    return RET_PF_FIXED, 0


def kvm_mmu_write_protect_fault(vcpu: KvmVcpu, cr2_or_gpa: int, error_code: int) -> tuple[int, int]:
    """A write to a write-tracked gfn: emulate it, allowing unprotect-and-retry unless this RIP and
    address were just retried (last_retry_eip/addr)."""
    mmu = vcpu_mmu(vcpu)
    rip = vcpu.hw.reg("rip")
    if mmu.last_retry_eip == rip and mmu.last_retry_addr == cr2_or_gpa:
        return RET_PF_EMULATE, 0
    mmu.last_retry_eip = mmu.last_retry_addr = 0
    if vcpu_match_mmio_gva(vcpu, cr2_or_gpa):
        return RET_PF_EMULATE, 0
    # Simplified: no event awaits reinjection here (IDT-vectoring info is never set by the silicon).
    return RET_PF_EMULATE, int(EMULTYPE_ALLOW_RETRY_PF)


@kfunc("cr2_or_gpa")
def kvm_mmu_unprotect_gfn_and_retry(vcpu: KvmVcpu, cr2_or_gpa: int) -> bool:
    """Zap the shadow pages of the gfn the faulting write went to; the guest re-executes the instruction."""
    mmu = vcpu_mmu(vcpu)
    if not mmu.pages:
        return False
    try:
        gpa, _ = _walk(vcpu, cr2_or_gpa, paging.PFERR_WRITE_MASK)   # kvm_mmu_gva_to_gpa_write
    except paging.PageFault:
        return False
    sp = mmu.pages.get(gpa >> 12)
    if sp is None:
        return False
    kvm_mmu_prepare_zap_page(vcpu, sp)
    mmu.last_retry_eip, mmu.last_retry_addr = vcpu.hw.reg("rip"), cr2_or_gpa
    return True


@kfunc("gpa", "bytes")
def kvm_mmu_track_write(vcpu: KvmVcpu, gpa: int, new: bytes) -> None:
    """The emulator wrote a shadowed guest table (kvm_page_track_write): misaligned writes and write
    flooding (a third write with no fault through the page between) zap the page; otherwise the
    shadow entries of the written guest entries go (MMIO SPTEs derived from them with them)."""
    mmu = vcpu.arch.shadow_mmu
    if mmu is None or not mmu.pages:                   # no indirect shadow pages
        return
    sp = mmu.pages.get(gpa >> 12)
    if sp is None:
        return
    mmu.stat["mmu_pte_write"] += 1
    width = 8 if vcpu.hw.efer() & paging.EFER_LMA or vcpu.hw.cr(4) & paging.X86_CR4_PAE else 4
    misaligned = (gpa ^ (gpa + len(new) - 1)) & ~(width - 1) or len(new) < 4
    sp.write_flooding_count += 1
    if misaligned or (sp.level > 1 and sp.write_flooding_count >= 3):
        mmu.stat["mmu_flooded"] += 1
        kvm_mmu_prepare_zap_page(vcpu, sp)
        return
    _zap_mmio_sptes(vcpu, lambda tables: sp.gfn in tables)   # mmu_page_zap_pte of the written entries
    vcpu.hw.flush_tlb()


@kfunc("gva")
def kvm_mmu_invlpg(vcpu: KvmVcpu, gva: int) -> None:
    """INVLPG: the shadow entries of `gva` in every root go (kvm_mmu_invalidate_addr, KVM_MMU_ROOTS_ALL);
    a non-canonical address is a NOP."""
    if (gva >> 47) not in (0, (1 << 17) - 1):
        return
    vcpu.stat.invlpg += 1
    mmu = vcpu_mmu(vcpu)
    mmu.stat["invlpg"] += 1
    for root, sptes in mmu.mmio_sptes.items():
        sptes.pop(gva >> 12, None)
    vcpu.hw.spt_mmio.discard(gva >> 12)
    if mmu.mmio_gva is not None and mmu.mmio_gva == gva & ~0xFFF:
        mmu.mmio_gva = None                                 # vcpu_clear_mmio_info
    vcpu.hw.flush_tlb()
