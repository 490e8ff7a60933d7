# Two commands on a fresh machine: `make demo` and `make test`. Each creates
# .venv inside the checkout and installs into it when setup.cfg changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UPSTREAM ?= http://127.0.0.1:7860

.PHONY: test demo run standin lint format bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

test: $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff format --check inuqueue tests bench
	$(BIN)/ruff check inuqueue tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format inuqueue tests bench
	$(BIN)/ruff check --fix inuqueue tests bench

demo: $(STAMP)
	$(BIN)/inuqueue demo

run: $(STAMP)
	$(BIN)/inuqueue serve --upstream $(UPSTREAM)

standin: $(STAMP)
	$(BIN)/inuqueue standin

# The performance figures against baselines of the same run (bench/README.md).
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
