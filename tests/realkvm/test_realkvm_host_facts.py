"""What the real /dev/kvm on this host does, pinned as tests (they double as documentation).

Facts marked `pvm` were observed on kvm_pvm (paravirtual KVM host, AMD EPYC, 6.18), which runs a
non-PVM guest's supervisor code entirely in KVM's x86 emulator; they skip on other vendor modules.
The rest hold for any x86 KVM (they follow from x86.c / emulate.c, see reference §3, §7, §12).
"""

from __future__ import annotations

import pytest

from kvmsim.realkvm.tracefs import open_trace
from kvmsim.uapi import KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KvmExit, KvmMsrExitReason, PAGE_SIZE

from kvmguest import ENTRY, MMIO, Guest, fill_in

pytestmark = [pytest.mark.kvm, pytest.mark.usefixtures("binutils")]
MODES = ("real16", "prot32", "long64")
IO_GUEST = "mov al, 0x42\n out 0x10, al\n in al, 0x11\n hlt"  # 0x1000 mov, 0x1002 out, 0x1004 in, 0x1006 hlt


@pytest.fixture
def pvm(host) -> None:
    if host.module != "kvm_pvm":
        pytest.skip(f"observed on kvm_pvm; this host runs {host.module}")


@pytest.fixture
def trace():
    t, why = open_trace()
    if t is None:
        pytest.skip(why)
    return t


def _io(e) -> tuple:
    return e.reason, e.info.get("direction"), e.info.get("port"), e.info.get("size"), e.info.get("count")


# ---------------------------------------------------------------- 1, 2: boot modes, port I/O, HLT

@pytest.mark.parametrize("mode", MODES)
def test_out_in_hlt_exit_to_userspace_in_every_mode(kvm, mode: str) -> None:
    with Guest(kvm, mode, IO_GUEST) as g:
        g.run(10, fill_in(0x77))
        assert [_io(e) for e in g.exits] == [
            ("KVM_EXIT_IO", KVM_EXIT_IO_OUT, 0x10, 1, 1),
            ("KVM_EXIT_IO", KVM_EXIT_IO_IN, 0x11, 1, 1),
            ("KVM_EXIT_HLT", None, None, None, None)]
        assert g.exits[0].info["data"] == b"\x42" and g.exits[0].info["data_offset"] == PAGE_SIZE
        assert g.regs()["rax"] & 0xFF == 0x77
        assert g.exits[1].rip == 0x1004   # IN: RIP still at the instruction until KVM_RUN completes it
        assert g.exits[2].rip == 0x1007   # HLT: retired before the exit


@pytest.mark.parametrize("mode", MODES)
def test_pvm_out_exit_has_rip_past_the_instruction(kvm, pvm, mode: str) -> None:
    """VMX's fast PIO leaves RIP at the OUT (complete_fast_pio_out skips it); PVM emulates it: retired."""
    with Guest(kvm, mode, IO_GUEST) as g:
        g.run(1)
        assert g.exits[0].reason == "KVM_EXIT_IO" and g.exits[0].rip == 0x1004


@pytest.mark.parametrize("mode,trace_mode", [("real16", "real"), ("prot32", "prot32"), ("long64", "prot64")])
def test_pvm_emulates_every_guest_instruction(kvm, pvm, trace, mode: str, trace_mode: str) -> None:
    """No kvm_exit/kvm_entry at all: each instruction is one kvm_emulate_insn (a 1000-iteration loop: 2002)."""
    with Guest(kvm, mode, "mov ecx, 1000\n1: dec ecx\n jnz 1b\n hlt") as g, trace:
        g.run(3)
    assert g.reasons() == ["KVM_EXIT_HLT"]
    emulated = trace.of("kvm_emulate_insn")
    assert len(emulated) == 2002
    assert {e["fields"]["mode"] for e in emulated} == {trace_mode}
    assert not trace.of("kvm_exit") and not trace.of("kvm_entry")
    assert [e["fields"]["reason"] for e in trace.of("kvm_userspace_exit")] == ["KVM_EXIT_HLT"]


def test_pio_trace_events_around_userspace_exits(kvm, trace) -> None:
    """kvm_pio for OUT precedes the exit; for IN it follows it (complete_emulator_pio_in)."""
    with Guest(kvm, "long64", IO_GUEST) as g, trace:
        g.run(10, fill_in(0x5A))
    seq = [(e["event"], e["fields"].get("rw") or e["fields"].get("reason"))
           for e in trace.events if e["event"] in ("kvm_pio", "kvm_userspace_exit")]
    assert seq == [("kvm_pio", "write"), ("kvm_userspace_exit", "KVM_EXIT_IO"),
                   ("kvm_userspace_exit", "KVM_EXIT_IO"), ("kvm_pio", "read"),
                   ("kvm_userspace_exit", "KVM_EXIT_HLT")]
    assert trace.of("kvm_pio")[1]["fields"]["val"] == 0x5A


# ---------------------------------------------------------------- 3: MMIO

MMIO_GUEST = f"""
    mov eax, [{MMIO:#x}]          # 0x1000 (9 bytes, moffs)
    mov [{MMIO + 0x10:#x}], eax   # 0x1009
    mov rbx, {MMIO + 0xFFE:#x}    # 0x1012
    mov eax, [rbx]                # 0x101c page-crossing read
    mov dword ptr [rbx], 0xaabbccdd  # 0x101e page-crossing write
    hlt                           # 0x1024
"""


def test_mmio_read_rip_at_insn_write_rip_after_and_page_split(kvm) -> None:
    with Guest(kvm, "long64", MMIO_GUEST) as g:
        g.run(20, fill_in(0x1122334455667788))
        got = [(e.reason, e.info.get("phys_addr"), e.info.get("len"), e.info.get("is_write"), e.rip)
               for e in g.exits]
        assert got == [
            ("KVM_EXIT_MMIO", MMIO, 4, 0, 0x1000),            # read: not retired (re-entered with NO_DECODE)
            ("KVM_EXIT_MMIO", MMIO + 0x10, 4, 1, 0x1012),     # write: retired before the exit
            ("KVM_EXIT_MMIO", MMIO + 0xFFE, 2, 0, 0x101C),    # page-crossing read: one exit per page
            ("KVM_EXIT_MMIO", MMIO + 0x1000, 2, 0, 0x101C),
            ("KVM_EXIT_MMIO", MMIO + 0xFFE, 2, 1, 0x1024),    # page-crossing write: two exits, retired
            ("KVM_EXIT_MMIO", MMIO + 0x1000, 2, 1, 0x1024),
            ("KVM_EXIT_HLT", None, None, None, 0x1025)]
        assert g.exits[1].info["data"] == bytes.fromhex("88776655")
        assert g.exits[4].info["data"] + g.exits[5].info["data"] == bytes.fromhex("ddccbbaa")
        assert g.regs()["rax"] == 0x77887788  # low 2 bytes of each fragment's answer


def test_mmio_trace_unsatisfied_read_then_read(kvm, trace) -> None:
    with Guest(kvm, "long64", MMIO_GUEST) as g, trace:
        g.run(20, fill_in(0x1122334455667788))
    mmio = [(e["fields"]["type"], e["fields"]["len"], e["fields"]["gpa"]) for e in trace.of("kvm_mmio")]
    assert mmio[:3] == [("unsatisfied-read", 4, MMIO), ("read", 4, MMIO), ("write", 4, MMIO + 0x10)]
    assert ("write", 2, MMIO + 0x1000) in mmio


def test_sse_16_byte_mmio_move_is_two_8_byte_exits(kvm) -> None:
    src = f"mov rbx, {MMIO:#x}\n movdqu xmm0, [rbx]\n movdqu [rbx+0x20], xmm0\n hlt"
    with Guest(kvm, "long64", src) as g:
        g.run(10, fill_in(0x1122334455667788))
        got = [(e.reason, e.info.get("phys_addr"), e.info.get("len"), e.info.get("is_write"), e.rip)
               for e in g.exits]
        assert got == [("KVM_EXIT_MMIO", MMIO, 8, 0, 0x100A), ("KVM_EXIT_MMIO", MMIO + 8, 8, 0, 0x100A),
                       ("KVM_EXIT_MMIO", MMIO + 0x20, 8, 1, 0x1013), ("KVM_EXIT_MMIO", MMIO + 0x28, 8, 1, 0x1013),
                       ("KVM_EXIT_HLT", None, None, None, 0x1014)]
        assert g.exits[2].info["data"] == g.exits[3].info["data"] == bytes.fromhex("8877665544332211")


# ---------------------------------------------------------------- 4: string I/O

def test_rep_insb_batches_1024_per_exit_rep_outsb_one_per_exit(kvm) -> None:
    """INS fills the emulator's 1024-byte read cache per exit; OUTS exits once per element."""
    src = "mov rdi, 0x3000\n mov ecx, 5000\n mov dx, 0x3f8\n rep insb\n mov ecx, 3\n rep insd\n" \
          "mov rsi, 0x2000\n mov ecx, 4\n rep outsb\n hlt"
    with Guest(kvm, "long64", src) as g:
        g.run(30, fill_in(0xABABABABABABABAB))
        ins = [(e.info["size"], e.info["count"], e.rip) for e in g.exits if e.reason == "KVM_EXIT_IO"
               and e.info["direction"] == KVM_EXIT_IO_IN]
        outs = [(e.info["count"], e.rip) for e in g.exits if e.reason == "KVM_EXIT_IO"
                and e.info["direction"] == KVM_EXIT_IO_OUT]
        assert ins == [(1, 1024, 0x1010)] * 4 + [(1, 904, 0x1010), (4, 3, 0x1017)]
        assert outs == [(1, 0x1025)] * 4  # each at the instruction: not retired until the last
        assert g.ram[0x3000:0x3000 + 5000] == b"\xab" * 5000
        assert g.regs()["rdi"] == 0x3000 + 5000 + 12 and g.regs()["rcx"] == 0


# ---------------------------------------------------------------- 5: CPUID, MSRs, hypercalls, faults

GP_HANDLER = "\n.org 0x100\n pop rbx\n mov al, 13\n out 0xe0, al\n hlt\n"  # 0x1100: #GP handler


def test_cpuid_is_handled_in_kernel(kvm) -> None:
    with Guest(kvm, "long64", "xor eax, eax\n cpuid\n hlt") as g:
        g.run(3)
        assert g.reasons() == ["KVM_EXIT_HLT"]
        r = g.regs()
        vendor = (r["rbx"].to_bytes(4, "little") + r["rdx"].to_bytes(4, "little") + r["rcx"].to_bytes(4, "little"))
        assert vendor in (b"AuthenticAMD", b"GenuineIntel")


def test_rdmsr_unknown_injects_gp(kvm) -> None:
    with Guest(kvm, "long64", "mov ecx, 0x12345678\n rdmsr\n hlt" + GP_HANDLER) as g:
        g.set_idt_entry(13, 0x1100)
        g.run(5)
        assert [_io(e) for e in g.exits][0] == ("KVM_EXIT_IO", KVM_EXIT_IO_OUT, 0xE0, 1, 1)
        assert g.exits[0].info["data"] == b"\x0d" and g.regs()["rbx"] == 0  # error code 0


def test_rdmsr_unknown_without_idt_is_triple_fault_shutdown(kvm) -> None:
    with Guest(kvm, "long64", "mov ecx, 0x12345678\n rdmsr\n hlt") as g:
        g.run(5)
        assert g.reasons() == ["KVM_EXIT_SHUTDOWN"]


def test_user_space_msr_exits_rip_at_instruction(kvm) -> None:
    src = "mov ecx, 0x12345678\n rdmsr\n mov ecx, 0x12345679\n wrmsr\n hlt"  # rdmsr @0x1005, wrmsr @0x100c

    def answer(g: Guest, e) -> None:
        if e.reason == "KVM_EXIT_X86_RDMSR":
            g.vcpu.mapping.run.msr.data = 0xABCDEF

    with Guest(kvm, "long64", src) as g:
        g.vm.enable_user_space_msr(KvmMsrExitReason.UNKNOWN | KvmMsrExitReason.INVAL)
        g.run(5, answer)
        got = [(e.reason, e.info.get("reason"), e.info.get("index"), e.info.get("data"), e.rip) for e in g.exits]
        assert got == [("KVM_EXIT_X86_RDMSR", KvmMsrExitReason.UNKNOWN, 0x12345678, 0, 0x1005),
                       ("KVM_EXIT_X86_WRMSR", KvmMsrExitReason.UNKNOWN, 0x12345679, 0xABCDEF, 0x100C),
                       ("KVM_EXIT_HLT", None, None, None, 0x100F)]


@pytest.mark.parametrize("insn", ["vmcall", "vmmcall"])
def test_pvm_hypercall_from_plain_guest_livelocks(kvm, pvm, insn: str) -> None:
    """The emulator's em_hypercall patches the insn (VMMCALL becomes VMCALL 0f 01 c1) and re-executes it
    forever: KVM_RUN only returns when signalled, RAX keeps the call number (no -KVM_ENOSYS)."""
    with Guest(kvm, "long64", f"mov eax, 0x77\n {insn}\n hlt") as g:
        g.vcpu.run_timeout = 0.5
        g.run(1)
        assert g.reasons() == ["-EINTR"] and g.vcpu.timed_out
        assert g.vcpu.mapping.run.exit_reason == KvmExit.INTR
        assert g.exits[0].rip == 0x1005 and g.regs()["rax"] == 0x77
        assert g.ram[0x1005:0x1008] == b"\x0f\x01\xc1"


def test_ud2_without_idt_is_triple_fault_shutdown(kvm) -> None:
    with Guest(kvm, "long64", "ud2\n hlt") as g:
        g.run(3)
        assert g.reasons() == ["KVM_EXIT_SHUTDOWN"] and g.exits[0].rip == 0x1000


def test_avx_mmio_load_is_emulation_failure(kvm, host) -> None:
    with Guest(kvm, "long64", f"mov rbx, {MMIO:#x}\n vmovdqu ymm0, [rbx]\n hlt") as g:
        g.run(3)
        e = g.exits[0]
        assert e.reason == "KVM_EXIT_INTERNAL_ERROR" and e.rip == 0x100A
        assert e.info["suberror"] == 1 and e.info["ndata"] >= 3
        assert e.info["flags"] == 1   # KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
        assert e.info["insn"].startswith(bytes.fromhex("c5fe6f03f4"))
        if host.module == "kvm_pvm":  # flags, 2 insn words, get_exit_info's 5 (PVM reason 0x1000), no cpu word
            assert len(e.info["insn"]) == 15 and e.info["ndata"] == 8 and e.info["data"][3:] == [0x1000, 0, 0, 0, 0]


def test_pvm_int3_in_long_mode_is_emulation_failure(kvm, pvm) -> None:
    """The emulator only delivers INTn in real mode; in long mode INT3 fails (not a #BP / shutdown)."""
    with Guest(kvm, "long64", "int3\n hlt") as g:
        g.run(3)
        e = g.exits[0]
        assert (e.reason, e.info["suberror"], e.rip, e.info["insn"][:2]) == (
            "KVM_EXIT_INTERNAL_ERROR", 1, 0x1000, b"\xcc\xf4")


# ---------------------------------------------------------------- 6: ioeventfd

def test_ioeventfd_kicks_without_userspace_exit(kvm) -> None:
    src = f"""mov rbx, {MMIO:#x}
        mov dword ptr [rbx], 1           # len-0 ioeventfd: any length matches
        mov dword ptr [rbx+0x100], 2     # len-4 ioeventfd
        mov al, 1
        out 0x80, al                     # PIO ioeventfd
        mov word ptr [rbx+0x100], 2      # wrong length: a normal MMIO exit (at 0x101e, retired)
        hlt"""
    evs = {}
    with Guest(kvm, "long64", src, setup=lambda vm: evs.update(
            any=vm.ioeventfd(MMIO, 0), four=vm.ioeventfd(MMIO + 0x100, 4), pio=vm.ioeventfd(0x80, 1, pio=True))) as g:
        g.run(5)
        assert [(e.reason, e.info.get("phys_addr"), e.info.get("len")) for e in g.exits] == [
            ("KVM_EXIT_MMIO", MMIO + 0x100, 2), ("KVM_EXIT_HLT", None, None)]
        assert {k: v.read_count() for k, v in evs.items()} == {"any": 1, "four": 1, "pio": 1}


# ---------------------------------------------------------------- 8: NMI

def test_kvm_nmi_is_delivered_through_idt(kvm) -> None:
    src = "nop\n mov al, 1\n out 0xe1, al\n hlt\n.org 0x200\n mov al, 2\n out 0xe0, al\n iretq\n"
    with Guest(kvm, "long64", src) as g:
        g.set_idt_entry(2, 0x1200)
        g.vcpu.nmi()
        g.run(5)
        assert [(e.info.get("port"), e.info.get("data")) for e in g.exits] == [
            (0xE0, b"\x02"), (0xE1, b"\x01"), (None, None)]  # handler first, then the interrupted code
        assert g.exits[-1].reason == "KVM_EXIT_HLT"


def test_coalesced_mmio_writes_land_in_the_ring_without_exit(kvm) -> None:
    src = f"mov rbx, {MMIO:#x}\n mov dword ptr [rbx+0x200], 0x1234\n mov byte ptr [rbx+0x204], 7\n hlt"
    with Guest(kvm, "long64", src, setup=lambda vm: vm.register_coalesced_mmio(MMIO + 0x200, 0x100)) as g:
        g.run(5)
        assert g.reasons() == ["KVM_EXIT_HLT"]
        ring = g.vcpu.mapping.ring
        got = [(ring.coalesced_mmio[i].phys_addr, ring.coalesced_mmio[i].len,
                bytes(ring.coalesced_mmio[i].data[:ring.coalesced_mmio[i].len])) for i in range(ring.first, ring.last)]
        assert got == [(MMIO + 0x200, 4, bytes.fromhex("34120000")), (MMIO + 0x204, 1, b"\x07")]
