# The first two targets set everything up on a fresh machine (README).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: compiled run test bench bench-million fuzz-emulator fuzz-guests fuzz-guests-diff fuzz-scenarios diff check kut kut-table clean

# The demo: a mixed workload's run report, then the emulation census of it and of its nested twin.
run: $(STAMP) compiled
	$(BIN)/kvmsim run --keep-exits 3 scenarios/census.yaml
	$(BIN)/kvmsim census scenarios/census.yaml scenarios/census-nested.yaml

test: $(STAMP) compiled
	$(BIN)/python -m pytest -q

# BENCH_ARGS: --json (one document, to track figures across commits), --rounds N, --flat (10k vs 1M exits).
BENCH_ARGS ?=

bench: $(STAMP) compiled
	$(BIN)/kvmsim bench $(BENCH_ARGS)

# Issue 10's long-run figures: 1,000,000 PIO and 1,000,000 MMIO exits, each one `kvmsim run`
# (guest build cached first, so it is not timed); wall, user CPU seconds and peak RSS per run.
bench-million: $(STAMP) compiled
	@$(BIN)/kvmsim check scenarios/bench/million-*.yaml >/dev/null
	@for f in scenarios/bench/million-pio.yaml scenarios/bench/million-mmio.yaml; do \
	  /usr/bin/time -f "$$f: %e s wall, %U s user, %M KB peak RSS" $(BIN)/kvmsim run $$f >/dev/null || exit 1; \
	done

fuzz-emulator: $(STAMP) compiled
	$(BIN)/python -m pytest -q -m fuzz tests/emulate

# Random guests through the whole simulator (kvmsim/fuzz): FUZZ_GUESTS per mode, non-zero exit on any BUG.
# The -diff variant runs each guest on /dev/kvm too and reports how often the exit streams agree.
FUZZ_GUESTS ?= 2000
FUZZ_SEED   ?= 1
FUZZ_JOBS   ?= 1
FUZZ_ARGS    = --count $(FUZZ_GUESTS) --seed $(FUZZ_SEED) --jobs $(FUZZ_JOBS)

fuzz-guests: $(STAMP) compiled
	$(BIN)/python -m kvmsim.fuzz $(FUZZ_ARGS)

fuzz-guests-diff: $(STAMP) compiled
	$(BIN)/python -m kvmsim.fuzz --diff $(FUZZ_ARGS)

# Seeded mutants of scenarios/*.yaml through `kvmsim check` and `kvmsim run` (kvmsim/fuzz/scenarios.py):
# FUZZ_SCENARIOS files; non-zero exit on any BUG (status 3, hang, oversized output, check/run disagreeing).
FUZZ_SCENARIOS ?= 2000

fuzz-scenarios: $(STAMP) compiled
	$(BIN)/python -m kvmsim.fuzz.scenarios --count $(FUZZ_SCENARIOS) --seed $(FUZZ_SEED) --jobs $(FUZZ_JOBS)

diff: $(STAMP) compiled
	$(BIN)/kvmsim diff scenarios/*.yaml

check: $(STAMP)
	$(BIN)/kvmsim check scenarios/*.yaml

# kvm-unit-tests' whole x86 list (x86_64 and i386 builds of ../shared/kvm-unit-tests, made once into the
# cache) through `kvmsim kut`; KUT_ARGS adds flags (--backend kvm, --tap, --smp1, --kut-dir DIR, ...).
KUT_ARGS ?= -j 2

kut: $(STAMP) compiled
	@st=0; for a in x86_64 i386; do $(BIN)/kvmsim kut --arch $$a $(KUT_ARGS) || st=1; done; exit $$st

# The README's kvm-unit-tests results table (kvmsim/kut/table.py): the issue's smp = 1 targets on
# kvmsim, on /dev/kvm (--backend kvm) and under QEMU TCG and QEMU KVM (--qemu; SKIP without qemu),
# each test's run_tests.sh line per column and one line of why where they differ.
KUT_TABLE_ARGS ?=

kut-table: $(STAMP)
	$(BIN)/python -m kvmsim.kut.table $(KUT_TABLE_ARGS)

$(STAMP): pyproject.toml
	@command -v as >/dev/null && command -v ld >/dev/null && command -v objcopy >/dev/null || \
	  { echo "installing binutils (as, ld, objcopy)"; (apt-get update -qq && apt-get install -y -qq binutils) >/dev/null; }
	@command -v tmux >/dev/null || { echo "installing tmux (the debugger's terminal tests)"; \
	  (apt-get update -qq && apt-get install -y -qq tmux) >/dev/null || echo "tmux not installed: those tests skip"; }
	@command -v gdb >/dev/null || { echo "installing gdb (tests attach it to kvmsim debug --gdb)"; \
	  (apt-get update -qq && apt-get install -y -qq gdb) >/dev/null || echo "no gdb: its tests will skip"; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m kvmsim.compiled build --quiet
	touch $(STAMP)

# The compiled exit path (kvmsim/compiled/, README): the hot modules rebuilt with Cython where their
# source changed (a no-op in half a second when current); without a C compiler or Python headers, one
# notice line and the pure-Python source runs.  KVMSIM_PURE=1 runs the source whatever is built.
# The extensions of the compiled exit path, and bytecode for the rest: each `kvmsim` start then reads
# .pyc files even where PYTHONDONTWRITEBYTECODE is set (about 0.1 s a start; stale ones are ignored).
compiled: $(STAMP)
	@$(BIN)/python -m kvmsim.compiled build --quiet
	@$(BIN)/python -m compileall -q kvmsim tests >/dev/null

clean:
	-@[ -x $(BIN)/python ] && $(BIN)/python -m kvmsim.compiled clean
	rm -rf $(VENV) .pytest_cache
