# The first two targets set everything up on a fresh machine (README).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test bench fuzz-emulator diff check clean

run: $(STAMP)
	$(BIN)/kvmsim run scenarios/mmio-read-no-decode.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/kvmsim bench

fuzz-emulator: $(STAMP)
	$(BIN)/python -m pytest -q -m fuzz tests/emulate

diff: $(STAMP)
	$(BIN)/kvmsim diff scenarios/*.yaml

check: $(STAMP)
	$(BIN)/kvmsim check scenarios/*.yaml

$(STAMP): pyproject.toml
	@command -v as >/dev/null && command -v ld >/dev/null && command -v objcopy >/dev/null || \
	  { echo "installing binutils (as, ld, objcopy)"; (apt-get update -qq && apt-get install -y -qq binutils) >/dev/null; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache
