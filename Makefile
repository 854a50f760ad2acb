# Two commands do all set-up on a fresh clone:
#   make demo   creates .venv, installs dlfund and runs the main job (train + evaluate on digits, offline)
#   make test   creates/updates .venv with the dev extras and runs the whole suite (lint included)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# Tests run on 2 workers: compilation is single-threaded, so two processes keep both cores busy.
PYTEST_WORKERS ?= 2

.PHONY: demo test lint format bench experiments clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/dlfund train $(ARGS)
	@echo "dlfund is installed in $(VENV): 'source $(VENV)/bin/activate' puts the dlfund command on the PATH" \
		"(or call $(BIN)/dlfund ...), e.g. dlfund evaluate RUN_DIR, dlfund predict RUN_DIR INPUT"

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(PYTEST_WORKERS) --nbmake tests notebooks

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every registered experiment in full, each writing results/<name>/ (results.json, report.md, figures); an
# experiment whose claim does not hold is reported and the others still run.
experiments: $(VENV)/.installed
	@for name in $$($(BIN)/python -c "from dlfund.experiments import EXPERIMENTS; print(*EXPERIMENTS.names())"); do \
		$(BIN)/dlfund experiment $$name --out results/$$name > /dev/null \
			&& echo "$$name: every claim holds (results/$$name/report.md)" \
			|| echo "$$name: a claim FAILS or the run failed (results/$$name/report.md)"; \
	done

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_fit.py

clean:
	rm -rf $(VENV) runs results .pytest_cache
