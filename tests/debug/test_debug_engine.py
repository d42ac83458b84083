"""The debugger engine: stops where asked, never changes the outcome, guest code stops by the trap mechanism."""

from __future__ import annotations

import threading

import pytest

from conftest import LOOP, SPIN, asm_scenario, scenario
from kvmsim.debug import STAGES, DebugError, Debugger
from kvmsim.scenario.runner import run_scenario
from kvmsim.trace.recorder import Recorder


def _outcome(res) -> dict:
    """What a run produced, wall time aside."""
    return {"stop": res.stop, "userspace": [(e.kname, e.fields) for e in res.userspace], "regs": res.regs,
            "sregs": res.sregs, "exits": res.exits, "emulation": res.emulation, "serial": res.serial,
            "devices": res.devices, "guest_insns": res.guest_insns, "exceptions": res.exceptions}


def _drive(dbg: Debugger, plan: list[str]):
    """Resume by the plan's motions, then continue to the end; the final stop."""
    stop = dbg.start()
    for how in plan:
        if not stop.running:
            break
        stop = dbg.resume(how)
    while stop.running:
        stop = dbg.cont()
    return stop


DETERMINISM = [
    ("mmio-read-no-decode", ["exit EPT_VIOLATION", "func complete_emulated_mmio", "tp kvm_mmio", "_start"],
     ["stepi", "stepi", "continue", "step", "step", "step", "next", "finish", "stepi", "continue"]),
    ("mode-switch-real-to-long", ["exit CR_ACCESS", "userspace mmio", "emultype PF"],
     ["stepi"] * 40 + ["next", "step", "step", "continue", "stepi", "stepi", "continue"]),
    ("rep-movs-mmio-long64", ["gpa 0xd0000000-0xd0000fff", "port 0xf4"],
     ["step"] * 30 + ["stepi"] * 5),
    ("port-in-real16", ["exit IO_INSTRUCTION", "userspace io"], ["stepi"] * 10 + ["next", "step", "step"]),
]


@pytest.mark.parametrize("name,breaks,plan", DETERMINISM, ids=[d[0] for d in DETERMINISM])
def test_run_under_debugger_gives_same_trace_and_result(name, breaks, plan):
    sc = scenario(name)
    plain = run_scenario(sc, trace=Recorder())
    rec = Recorder().start()
    try:
        dbg = Debugger(scenario(name))
        for b in breaks:
            dbg.add_breakpoint(b)
        end = _drive(dbg, plan)
    finally:
        rec.stop()
    dbg.close()
    assert end.kind == "end", end.text
    assert sum(bp.hits for bp in dbg.breakpoints.values()) > 0
    assert rec.lines() == plain.trace
    assert _outcome(end.result) == _outcome(plain)


@pytest.mark.parametrize("name,breaks,plan", DETERMINISM[:2], ids=[d[0] for d in DETERMINISM[:2]])
def test_unwatched_debugger_gives_same_result(name, breaks, plan):
    """No other probe subscriber: the engine starts and stops watching as the motions need it."""
    plain = run_scenario(scenario(name))
    dbg = Debugger(scenario(name))
    if name == "mmio-read-no-decode":
        dbg.add_breakpoint("_start")
    end = _drive(dbg, plan)
    dbg.close()
    assert _outcome(end.result) == _outcome(plain)


def test_step_walks_the_stages_of_a_no_decode_round_trip_in_order():
    dbg = Debugger(scenario("mmio-read-no-decode"))
    dbg.start()
    dbg.add_breakpoint("exit EPT_VIOLATION")
    stop = dbg.cont()
    assert (stop.kind, stop.stage) == ("breakpoint", "vm-exit")
    stages, names = [stop.stage], []
    while stop.stage != "vm-entry":
        stop = dbg.step()
        stages.append(stop.stage)
        names.append(stop.event.name)
    dbg.close()
    assert stages == ["vm-exit", "exit-handler", "emulator-decode", "emulator-execute", "userspace-exit",
                      "complete-userspace-io", "emulator-execute", "vm-entry"]
    assert names[0] == "handle_ept_violation" and names[4] == "complete_emulated_mmio"
    assert all(s in STAGES for s in stages)


def test_stepi_follows_the_guest_from_real_mode_to_long_mode():
    plain = run_scenario(scenario("mode-switch-real-to-long"))
    dbg = Debugger(scenario("mode-switch-real-to-long"))
    stop = dbg.start()
    modes, steps, rips = [], 0, set()
    while True:
        stop = dbg.stepi()
        if not stop.running:
            break
        steps += 1
        assert stop.kind == "step"
        rips.add(stop.rip)
        if not modes or modes[-1] != dbg.mode():
            modes.append(dbg.mode())
    dbg.close()
    assert modes == ["real", "prot16", "prot32", "compat", "long64"]
    # One stop per instruction before the final OUT, whose stepi ends the run.  guest_insns counts
    # every completed instruction, those KVM completes after an exit too, but not that OUT: the
    # VMM stops at its debug-exit, so no KVM_RUN runs complete_fast_pio_out to skip it.
    assert steps == plain.guest_insns
    assert len(rips) > 50
    assert _outcome(stop.result) == _outcome(plain)


def test_rip_breakpoint_hits_condition_ignore_tbreak_disable(loop_scenario):
    dbg = Debugger(loop_scenario)
    dbg.start()
    every = dbg.add_breakpoint("loop")
    stop = dbg.cont()
    assert stop.kind == "breakpoint" and stop.breakpoints == (every.number,)
    assert stop.rip == dbg.symbol("loop") and dbg.get_reg("rcx") == 5
    dbg.ignore(every.number, 2)                      # rcx 4 and 3 pass by
    stop = dbg.cont()
    assert stop.breakpoints == (every.number,) and dbg.get_reg("rcx") == 2
    assert every.hits == 4 and every.ignore_count == 0
    dbg.enable(every.number, False)
    tb = dbg.add_breakpoint("port 0x80", temporary=True)
    stop = dbg.cont()
    assert stop.breakpoints == (tb.number,) and stop.stage == "vm-exit" and dbg.get_reg("rcx") == 2
    assert tb.number not in dbg.breakpoints
    cond = dbg.add_breakpoint("rip loop", condition="regs.rcx == 1")
    stop = dbg.cont()
    assert stop.breakpoints == (cond.number,) and dbg.get_reg("rcx") == 1
    stop = dbg.cont()
    dbg.close()
    assert stop.kind == "end" and stop.result.stop.reason == "debug-exit"
    assert every.hits == 4 and cond.hits == 1        # a disabled breakpoint counts nothing


def test_set_reg_changes_what_the_guest_does(loop_scenario):
    dbg = Debugger(loop_scenario)
    dbg.start()
    dbg.add_breakpoint("loop")
    dbg.cont()
    dbg.set_reg("rcx", 1)                   # one pass instead of five
    dbg.delete()
    stop = dbg.cont()
    dbg.close()
    assert stop.result.exits == {"IO_INSTRUCTION": 2}


def test_kvm_run_set_answers_an_mmio_read_by_hand():
    dbg = Debugger(scenario("mmio-read-no-decode"))
    dbg.start()
    dbg.add_breakpoint("userspace mmio")
    stop = dbg.cont()
    assert stop.stage == "userspace-exit" and dbg.kvcpu.run.mmio.phys_addr == 0xD0000000
    dbg.kvm_run_set("mmio.data", bytes.fromhex("78563412"))
    dbg.delete()
    stop = dbg.cont()
    dbg.close()
    assert stop.result.regs["rdx"] == 0x12345678 and stop.result.regs["rcx"] == 0xCAFE


def test_ctrl_c_stops_a_spinning_guest_and_the_run_goes_on():
    dbg = Debugger(asm_scenario(SPIN, limits={"max_guest_insns": None}))
    dbg.start()
    timers = [threading.Timer(t, dbg.interrupt) for t in (0.2, 0.4)]
    for t in timers:
        t.start()
    stop = dbg.cont()
    assert stop.kind == "interrupt" and stop.rip == dbg.symbol("spin")
    dbg.set_reg("rip", dbg.symbol("ok"))
    stop = dbg.cont()
    dbg.close()
    assert stop.result.stop.reason == "debug-exit" and stop.result.stop.code == 0


def test_memory_by_gva_and_gpa_and_registers():
    dbg = Debugger(scenario("mmio-read-no-decode"))
    dbg.start()
    dbg.add_breakpoint("exit EPT_VIOLATION")
    dbg.cont()
    start = dbg.symbol("_start")
    gpa = dbg.translate(start)
    assert dbg.read_memory(start, 10) == dbg.read_memory(gpa, 10, physical=True)
    assert dbg.read_memory(start, 2) == bytes.fromhex("48bb")    # movabs $..., %rbx
    regs = dbg.registers()
    assert regs["cr0"] >> 31 == 1 and regs["efer"] & 0x500 == 0x500 and dbg.mode() == "long64"
    dbg.set_reg("fs_base", 0x1234000)
    assert dbg.get_reg("fs_base") == 0x1234000
    with pytest.raises(DebugError):
        dbg.read_memory(0xD0000000, 4, physical=True)            # MMIO, not RAM
    with pytest.raises(DebugError):
        dbg.add_breakpoint("exit NO_SUCH_REASON")
    with pytest.raises(DebugError):
        dbg.add_breakpoint("func no_such_function")
    dbg.close()


def test_stops_generator_continues_unless_told(loop_scenario):
    dbg = Debugger(loop_scenario)
    dbg.add_breakpoint("port 0x80")
    kinds = [s.kind for s in dbg.stops()]
    dbg.close()
    assert kinds == ["start"] + ["breakpoint"] * 5 + ["end"]


def test_a_second_traced_run_in_one_process_records_the_call_graph_too():
    """probe._rebind once rewrote its own _PROBED/_PLAIN tables (upper-case dicts): after the first
    traced run, later subscribers got tracepoints only."""
    first = run_scenario(scenario("port-in"), trace=Recorder()).trace
    second = run_scenario(scenario("port-in"), trace=Recorder()).trace
    assert any(line.endswith("{") for line in first)
    assert second == first


MMIO_READ = """
_start:
    movabs $0xD0000000, %rbx
    mov (%rbx), %eax
    EXIT 0
"""


def test_attached_mid_run_the_stack_of_a_kernel_breakpoint_is_the_same():
    """Watching from a stop in guest code, the live kernel frames are found by walking the Python
    stack; a compiled kfunc (kvmsim/compiled/) has no frame of its own and is found through its
    probed twin's: the stack at `func x86_emulate_instruction` is the same as when watching from the start."""
    def stack_at_break(mid_run: bool) -> tuple[str, ...]:
        dbg = Debugger(asm_scenario(MMIO_READ))
        try:
            if mid_run:
                dbg.add_breakpoint("_start")
                stop = dbg.start()
                stop = dbg.cont()
                assert stop.kind == "breakpoint" and stop.event is None     # in guest code: not watching yet
            else:
                dbg.start()
            dbg.add_breakpoint("func x86_emulate_instruction")
            stop = dbg.cont()
            assert stop.kind == "breakpoint" and stop.event.name == "x86_emulate_instruction"
            return stop.event.stack
        finally:
            dbg.close()

    from_start = stack_at_break(False)
    assert from_start[-2:] == ("handle_ept_violation", "kvm_mmu_page_fault")
    assert stack_at_break(True) == from_start
