# Two commands for a new user: `make demo` and `make test`. Both build .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is installed first and pinned only when absent: a bare `torch` requirement would pull a
# multi-GB CUDA build, while 2.13.0 is the CPU build on this machine's disk.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/structkd demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

typecheck: $(STAMP)
	$(BIN)/mypy src

# Two test processes (pytest-xdist): CI runs on 2 cores, and most tests use one thread.
unit: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/bench_structures.py --threads 1 2 --out benchmarks/README.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
