# Everything installs itself into .venv: a fresh clone needs only python3 (3.11+) and make.
# Two stamps: `make demo` installs only the library and what the demo prints with;
# `make test` / `make bench` add the tools, test and benchmark dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.demo-stamp
TEST_STAMP := $(VENV)/.test-stamp

.PHONY: test demo bench lint typecheck unit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo,test,bench]'
	touch $@ $(DEMO_STAMP)

## make test: ruff, mypy --strict, then the whole pytest suite
test: lint typecheck unit

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/pytest

## make demo: three agents sharing memory, with a partition and its healing
demo: $(DEMO_STAMP)
	$(BIN)/python -m examples.blackboard

## make bench: the benchmark tables (see docs/benchmarks.md)
bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
