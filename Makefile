# Thin wrappers: `make repro` and `make test` set up .venv/ first (about two minutes, once).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup repro test test-fast bench ui prefect-server clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

repro: setup            ## run the pipeline on params.yaml (default: the quick preset)
	$(VENV)/bin/dvc repro

test: setup             ## the whole test suite (what CI runs)
	$(VENV)/bin/python -m pytest -q

test-fast: setup        ## skip the slow end-to-end tests
	$(VENV)/bin/python -m pytest -q -m "not slow"

bench: setup            ## collection throughput vs a plain dm_control loop
	$(VENV)/bin/python benchmarks/collect_throughput.py

ui: setup               ## the MLflow UI on 127.0.0.1:5000 with the project's store
	$(VENV)/bin/redraw ui

prefect-server: setup   ## Prefect server and UI on http://127.0.0.1:4200 (then PREFECT_API_URL=http://127.0.0.1:4200/api)
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

clean-venv:
	rm -rf $(VENV)
