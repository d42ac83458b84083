"""Unit tests of emulator rules: TRAP_UD, NotImpl/VEX, REP restart, read-cache replay,
LOCK #UD, Priv #GP, aligned SSE #GP, the census and the benchmark helper."""

from __future__ import annotations

from kvmsim.kvm.emulate import codes as C
from kvmsim.kvm.emulate.bench import bench_emulated_insns
from kvmsim.kvm.emulate.coverage import KERNEL_COUNTS, emulator_coverage, format_coverage
from kvmsim.kvm.emulate.ctxt import EmulatorFeatures
from kvmsim.kvm.emulate.decode import x86_decode_insn
from kvmsim.kvm.emulate.emulate import x86_emulate_insn
from kvmsim.kvm.emulate.ramops import RamOps, make_ctxt, run_insn

RAX, RCX, RDX, RBX, RSP, RSI, RDI = 0, 1, 2, 3, 4, 6, 7


def machine(mode: str = "long64", **kw):  # type: ignore[no-untyped-def]
    ops = RamOps(mode, **kw)
    ops.regs[RBX], ops.regs[RSP] = 0x4000, 0x8000
    return ops, make_ctxt(ops, rip=0x1000)


def test_result_codes_have_kernel_values() -> None:
    assert (C.X86EMUL_CONTINUE, C.X86EMUL_UNHANDLEABLE, C.X86EMUL_PROPAGATE_FAULT,
            C.X86EMUL_RETRY_INSTR, C.X86EMUL_CMPXCHG_FAILED, C.X86EMUL_IO_NEEDED,
            C.X86EMUL_INTERCEPTED) == (0, 1, 2, 3, 4, 5, 6)
    assert (C.EMULATION_FAILED, C.EMULATION_OK, C.EMULATION_RESTART,
            C.EMULATION_INTERCEPTED) == (-1, 0, 1, 2)
    assert [int(f) for f in C.EmulType] == [1 << i for i in range(9)]


def test_trap_ud_rejects_plain_instruction() -> None:
    ops, ctxt = machine()
    assert x86_decode_insn(ctxt, bytes.fromhex("8b03"), 2, C.EMULTYPE_TRAP_UD) == C.EMULATION_FAILED


def test_trap_ud_accepts_emulate_on_ud() -> None:
    ops, ctxt = machine()
    # vmcall (0f 01 c1) is EmulateOnUD: decoded, then em_hypercall asks fix_hypercall.
    assert run_insn(ctxt, bytes.fromhex("0f01c1"), C.EMULTYPE_TRAP_UD).rc == C.EMULATION_OK
    assert ops.hypercall_fixed == 1 and ctxt.eip == 0x1000  # re-executes the patched insn


def test_trap_ud_forced_emulates_anything() -> None:
    ops, ctxt = machine()
    assert run_insn(ctxt, bytes.fromhex("8b03"), C.EMULTYPE_TRAP_UD_FORCED).rc == C.EMULATION_OK


def test_notimpl_fails_decode() -> None:
    ops, ctxt = machine()
    assert x86_decode_insn(ctxt, b"\x27", 1, 0) == C.EMULATION_FAILED  # DAA is N


def test_vex_rejected_upstream() -> None:
    ops, ctxt = machine()
    insn = bytes.fromhex("c5fe6f03")  # vmovdqu ymm0,[rbx]
    assert x86_decode_insn(ctxt, insn, len(insn), 0) == C.EMULATION_FAILED
    ops32, ctxt32 = machine("prot32")
    insn = bytes.fromhex("c5f96f03")  # mod==3 in 32-bit mode: VEX, not LDS
    assert x86_decode_insn(ctxt32, insn, len(insn), 0) == C.EMULATION_FAILED


def test_vex_moves_feature() -> None:
    ops = RamOps("long64")
    ops.regs[RBX] = 0x4000
    ops.mem[0x4000:0x4020] = bytes(range(32))
    ctxt = make_ctxt(ops, rip=0x1000, features=EmulatorFeatures(vex_moves=True))
    assert run_insn(ctxt, bytes.fromhex("c5fe6f03")).rc == C.EMULATION_OK  # vmovdqu ymm0,[rbx]
    assert ops.xmm[0] == bytes(range(32)) and ctxt.eip == 0x1004
    ctxt = make_ctxt(ops, rip=0x1000, features=EmulatorFeatures(vex_moves=True))
    ops.regs[RBX] = 0x5000
    assert run_insn(ctxt, bytes.fromhex("c5f82903")).rc == C.EMULATION_OK  # vmovaps [rbx],xmm0
    assert bytes(ops.mem[0x5000:0x5010]) == bytes(range(16))
    ops.regs[RBX] = 0x5008  # misaligned vmovaps -> #GP(0)
    ctxt = make_ctxt(ops, rip=0x1000, features=EmulatorFeatures(vex_moves=True))
    run_insn(ctxt, bytes.fromhex("c5f82903"))
    assert ctxt.have_exception and ctxt.exception.vector == C.GP_VECTOR


def test_lock_without_lock_flag_is_ud() -> None:
    ops, ctxt = machine()
    run_insn(ctxt, bytes.fromhex("f08b03"))  # lock mov eax,[rbx]
    assert ctxt.have_exception and ctxt.exception.vector == C.UD_VECTOR


def test_lock_on_register_destination_is_ud() -> None:
    ops, ctxt = machine()
    run_insn(ctxt, bytes.fromhex("f001c8"))  # lock add eax,ecx
    assert ctxt.exception.vector == C.UD_VECTOR


def test_priv_instruction_at_cpl3_is_gp() -> None:
    ops, ctxt = machine(cpl_value=3)
    run_insn(ctxt, b"\xf4")  # hlt
    assert ctxt.have_exception and ctxt.exception.vector == C.GP_VECTOR
    assert ctxt.exception.error_code == 0 and not ops.halted


def test_aligned_sse_misaligned_is_gp() -> None:
    ops, ctxt = machine()
    ops.regs[RBX] = 0x4008
    run_insn(ctxt, bytes.fromhex("660f6f03"))  # movdqa xmm0,[rbx]
    assert ctxt.exception.vector == C.GP_VECTOR
    ops, ctxt = machine()
    ops.regs[RBX] = 0x4008
    assert run_insn(ctxt, bytes.fromhex("f30f6f03")).rc == C.EMULATION_OK  # movdqu is fine


def test_no64_in_long_mode_is_ud() -> None:
    ops, ctxt = machine()
    run_insn(ctxt, b"\x06")  # push es
    assert ctxt.exception.vector == C.UD_VECTOR


def test_rep_restart_rule() -> None:
    """REP loops inside KVM while rCX & 0x3ff != 0; at a 1024 boundary it returns
    without advancing RIP so the guest re-enters; rCX == 0 finishes."""
    ops, ctxt = machine()
    ops.regs[RCX], ops.regs[RDI], ops.regs[RAX] = 1026, 0x4000, 0x5A
    assert x86_decode_insn(ctxt, b"\xf3\xaa", 2, 0) == C.EMULATION_OK  # rep stosb
    assert x86_emulate_insn(ctxt) == C.EMULATION_RESTART  # rcx 1025: keep looping in KVM
    assert x86_emulate_insn(ctxt) == C.EMULATION_OK       # rcx 1024: back to the guest
    assert ops.regs[RCX] == 1024 and ctxt.eip == 0x1000   # ... without advancing RIP
    assert ctxt.eflags & C.X86_EFLAGS_RF


def test_rep_stos_exact_counts() -> None:
    ops, ctxt = machine()
    ops.regs[RCX], ops.regs[RDI], ops.regs[RAX] = 1030, 0x4000, 0x5A
    res = run_insn(ctxt, b"\xf3\xaa")
    assert res.rc == C.EMULATION_OK and ops.regs[RCX] == 1024 and ctxt.eip == 0x1000
    assert res.restarts == 5
    res = run_insn(make_ctxt(ops, rip=0x1000), b"\xf3\xaa")
    assert ops.regs[RCX] == 0 and ctxt.eip == 0x1000
    ctxt = make_ctxt(ops, rip=0x1000)
    assert run_insn(ctxt, b"\xf3\xaa").rc == C.EMULATION_OK and ctxt.eip == 0x1002
    assert bytes(ops.mem[0x4000:0x4000 + 1030]) == b"\x5a" * 1030


def test_read_cache_replay_after_io_needed() -> None:
    """An MMIO read needing userspace leaves the cache slot open; the NO_DECODE re-run
    replays earlier reads from the cache and consumes the answer without a second read."""
    ops, ctxt = machine(mmio=[(0xD000, 0xE000)], mmio_needs_exit=True,
                        mmio_values={0xD000: 0x1234})
    ops.regs[RSI], ops.regs[RDI], ops.regs[RCX] = 0x4000, 0xD000, 1
    ops.mem[0x4000:0x4004] = (0x1234).to_bytes(4, "little")
    res = run_insn(ctxt, bytes.fromhex("a7"))  # cmpsd: [rsi] from RAM, [rdi] from MMIO
    assert res.rc == C.EMULATION_OK and not ctxt.have_exception
    assert ctxt.eip == 0x1000 and ops.device_reads == [(0xD000, 4)]
    assert ctxt.mem_read.end == 4  # the RAM read is cached, the MMIO slot is pending
    res = run_insn(ctxt, None, C.EMULTYPE_NO_DECODE)
    assert res.rc == C.EMULATION_OK and ctxt.eip == 0x1001
    assert ops.device_reads == [(0xD000, 4)]  # no second device read
    assert ctxt.eflags & C.X86_EFLAGS_ZF and ops.regs[RSI] == 0x4004


def test_ins_read_ahead_and_outs_one_at_a_time() -> None:
    ops, ctxt = machine()
    ops.regs[RCX], ops.regs[RDI], ops.regs[RDX] = 8, 0x4000, 0x60
    ops.pio_in = lambda port, size: 0xAB
    res = run_insn(ctxt, b"\xf3\x6c")  # rep insb
    assert res.rc == C.EMULATION_OK and ops.pio_in_calls == [(0x60, 1, 8)]
    assert bytes(ops.mem[0x4000:0x4008]) == b"\xab" * 8
    ops, ctxt = machine()
    ops.regs[RCX], ops.regs[RSI], ops.regs[RDX] = 3, 0x4000, 0x3F8
    ops.mem[0x4000:0x4003] = b"abc"
    run_insn(ctxt, b"\xf3\x6e")  # rep outsb
    assert [v for _, _, v in ops.pio_outs] == [b"a", b"b", b"c"]


def test_ins_io_needed_then_complete() -> None:
    ops, ctxt = machine(pio_needs_exit=True)
    ops.regs[RDX] = 0x71
    ops.pio_in = lambda port, size: 0x42
    res = run_insn(ctxt, b"\xec")  # in al,dx
    assert res.rc == C.EMULATION_OK and ctxt.eip == 0x1000  # IO_NEEDED: not retired
    res = run_insn(ctxt, None, C.EMULTYPE_NO_DECODE)
    assert res.rc == C.EMULATION_OK and ops.regs[RAX] & 0xFF == 0x42 and ctxt.eip == 0x1001


def test_unimplemented_entries_fail_like_kernel() -> None:
    for insn in ("0f01c8", "0f01c9", "0f01f9", "f1", "0f01d8"):  # monitor mwait rdtscp icebp vmrun
        ops, ctxt = machine()
        ops.msrs[C.MSR_EFER] |= C.EFER_SVME
        assert run_insn(ctxt, bytes.fromhex(insn)).rc == C.EMULATION_FAILED, insn


def test_io_permission_bitmap_at_cpl3() -> None:
    ops, ctxt = machine(cpl_value=3)
    ops.mem[102:104] = (0x200).to_bytes(2, "little")  # I/O bitmap beyond the TSS limit
    run_insn(ctxt, b"\xe4\x60")  # in al,0x60 with IOPL 0 at CPL 3
    assert ctxt.exception.vector == C.GP_VECTOR


def test_sti_sets_shadow_and_cli_checks_iopl() -> None:
    ops, ctxt = machine()
    run_insn(ctxt, b"\xfb")
    assert ctxt.interruptibility == C.KVM_X86_SHADOW_INT_STI and ctxt.eflags & C.X86_EFLAGS_IF
    ops, ctxt = machine(cpl_value=3)
    run_insn(ctxt, b"\xfa")
    assert ctxt.exception.vector == C.GP_VECTOR


def test_divide_error() -> None:
    ops, ctxt = machine()
    ops.mem[0x4000] = 0
    run_insn(ctxt, bytes.fromhex("f633"))  # div byte [rbx]
    assert ctxt.exception.vector == C.DE_VECTOR


def test_fetch_fault_sets_exception() -> None:
    ops = RamOps("long64", mem=bytearray(0x2000))
    ctxt = make_ctxt(ops, rip=0x5000)
    assert x86_decode_insn(ctxt, None, 0, 0) == C.EMULATION_FAILED
    assert ctxt.have_exception and ctxt.exception.vector == C.PF_VECTOR


def test_census_reaches_kernel_counts() -> None:
    census = {c.table: c for c in emulator_coverage()}
    for table, count in KERNEL_COUNTS.items():
        assert census[table].modelled == count
    assert "opcode_table" in format_coverage()


def test_bench_helper_is_fast_enough() -> None:
    # Target is >= 20,000/s on an idle core (measured ~30k); keep the test robust under load.
    assert bench_emulated_insns(0.3) >= 5000


def test_mmx_operand_with_a_pending_x87_exception_is_mf() -> None:
    """flush_pending_x87_faults: before reading an MMX register KVM's FWAIT raises #MF when an
    unmasked x87 exception is pending (FSW.ES); with none pending the MOVQ runs."""
    insn = bytes.fromhex("0f7f03")  # movq [rbx], mm0
    ops, ctxt = machine()
    ops.mm[0], ops.fsw = 0x1122334455667788, 0x0080 | 0x0004   # ES | ZE: 0/0 with ZM unmasked
    assert run_insn(ctxt, insn).rc == C.EMULATION_OK and ctxt.have_exception
    assert ctxt.exception.vector == C.MF_VECTOR and not ctxt.exception.error_code_valid
    assert ops.mem[0x4000:0x4008] == bytes(8)
    ops, ctxt = machine()
    ops.mm[0], ops.fsw = 0x1122334455667788, 0x0004                # flag set but masked: no ES
    assert run_insn(ctxt, insn).rc == C.EMULATION_OK and not ctxt.have_exception
    assert ops.mem[0x4000:0x4008] == (0x1122334455667788).to_bytes(8, "little")
