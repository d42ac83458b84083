"""`kvmsim bench`'s baselines (issue 15): the C VMM and the minimal ctypes loop run the same guest
loop as the simulator and count exactly its round trips; A/B rounds alternate; --json carries
every figure with its verdict."""

from __future__ import annotations

import json

import pytest

from kvmsim import bench, compiled
from kvmsim.bench import Figure, ab_rounds, paired_ratio, to_json
from kvmsim.scenario.runner import make_machine


def test_ab_rounds_warm_up_then_alternate_the_order() -> None:
    calls: list[str] = []
    rates = {"a": 1.0, "b": 2.0, "c": 3.0}
    got = ab_rounds({n: (lambda n=n: calls.append(n) or rates[n]) for n in rates}, rounds=3)
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")
    assert got == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    # medians of each side would give 2.0 / 2.0 = 1.0; the rounds say a is half of b
    assert paired_ratio([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(0.5)
    assert paired_ratio([], []) is None


@pytest.mark.parametrize("ratio,verdict", [(1.0, "met"), (0.91, "met"), (1.09, "met"), (0.89, "MISSED"),
                                           (1.11, "MISSED"), (None, "not measured")])
def test_range_target_is_met_only_inside_it(ratio: float | None, verdict: str) -> None:
    f = Figure("flat", 1.0, "/s", 1.0, "short", "0.9x..1.1x")
    f.paired = ratio
    if ratio is None:
        f.value = None
    assert f.verdict == verdict


def test_json_document_has_every_figure_with_its_verdict() -> None:
    f = Figure("PIO round trips (sim)", 90.0, "/s", 100.0, "C VMM", ">= 1.0x C VMM", samples=[90.0],
               baseline_samples=[100.0])
    f.paired = 0.9
    load = {"loadavg": [1.0, 1.0, 1.0], "cpus": 2, "uptime": "up"}
    doc = json.loads(json.dumps(to_json([f], 1, load, load)))
    (fig,) = doc["figures"]
    assert fig["verdict"] == "MISSED" and fig["ratio"] == 0.9 and fig["samples"] == [90.0]
    assert doc["rounds"] == 1 and doc["load_before"]["cpus"] == 2


N = 3_000


@pytest.mark.kvm
@pytest.mark.parametrize("source,devices", [("pio_loop.S", bench._PIO_DEVICES), ("mmio_loop.S", bench._MMIO_DEVICES)])
def test_minimal_loop_counts_the_loops_round_trips(source: str, devices: list[dict]) -> None:
    from kvmsim.baseline.minloop import run_minloop

    with make_machine(bench._real_scenario(source, devices), "kvm") as m:
        rate, n = run_minloop(m, N)
        regs = m.vcpu.get_regs()
    assert n == N and rate > 0
    assert regs.rcx == 0          # the loop ran to its end


@pytest.mark.kvm
@pytest.mark.parametrize("source,devices", [("pio_loop.S", bench._PIO_DEVICES), ("mmio_loop.S", bench._MMIO_DEVICES)])
def test_c_vmm_counts_the_loops_round_trips(source: str, devices: list[dict]) -> None:
    from kvmsim.baseline.cvmm import build, run_cvmm

    binary, why = build()
    if binary is None:
        pytest.skip(why)
    with make_machine(bench._real_scenario(source, devices), "kvm") as m:
        rate, n = run_cvmm(binary, m, N)
    assert n == N and rate > 0


def test_c_vmm_build_says_why_without_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvmsim.baseline import cvmm

    monkeypatch.setattr(cvmm, "compiler", lambda: None)
    assert cvmm.build() == (None, "no C compiler (cc/gcc, or $CC) on PATH")


def test_json_document_says_which_code_the_figures_ran_on() -> None:
    """The compiled modules (kvmsim/compiled/) or the pure source, and why: figures must be honest."""
    import kvmsim.kvm.emulate.emulate as emu   # here: the bench's figures would have imported it
    load = {"loadavg": [1.0, 1.0, 1.0], "cpus": 2, "uptime": "up"}
    doc = json.loads(json.dumps(to_json([], 1, load, load)))
    if emu.__file__.endswith(compiled.EXT_SUFFIX):
        assert "kvmsim.kvm.emulate.emulate" in doc["compiled"] and doc["compiled_why"] == ""
    else:
        assert doc["compiled"] == "pure" and doc["compiled_why"] != ""
