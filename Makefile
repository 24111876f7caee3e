# Thin wrappers: `make repro` and `make test` set up .venv/ first (about two minutes, once).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup repro test test-fast bench ui prefect-server mlflow-server sweep-worker sweep clean-venv

setup: $(STAMP)

# -qq: errors only (a pip config whose extra index lacks most packages warns once per package);
# --no-compile: no .pyc for the whole of torch, mlflow, prefect up front, only for what is imported.
PIP_INSTALL := $(VENV)/bin/pip install -qq --disable-pip-version-check --no-compile

# Where PYTHONDONTWRITEBYTECODE is set, Python never writes the .pyc of what it imports, so every
# process would compile torch, mlflow and dvc from source again (~6 s more per pipeline stage):
# then the venv's packages are compiled once here (-qq: the few template files that are not
# valid Python are skipped silently).
$(STAMP): pyproject.toml
	@echo "setting up $(VENV)/ (pinned torch and mujoco, about two minutes, once)"
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[test]'
	@if [ -n "$$PYTHONDONTWRITEBYTECODE" ]; then \
	  echo "PYTHONDONTWRITEBYTECODE is set: compiling the venv's packages once (under a minute)"; \
	  $(VENV)/bin/python -m compileall -qq -j 0 "$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true; \
	fi
	touch $(STAMP)

repro: setup            ## run the pipeline on params.yaml (default: the quick preset), independent stages side by side
	$(VENV)/bin/redraw repro --jobs 2

# Two test processes (pytest-xdist): most tests keep one core busy. A file's tests run together in
# one of them, and the files that share the smoke pipeline in one (tests/conftest.py's groups).
TEST_WORKERS ?= 2

test: setup             ## the whole test suite (what CI runs); TEST_WORKERS=0 runs it in one process
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

test-fast: setup        ## skip the slow end-to-end tests
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

bench: setup            ## collection throughput vs a plain dm_control loop
	$(VENV)/bin/python benchmarks/collect_throughput.py

ui: setup               ## the MLflow UI on 127.0.0.1:5000 with the project's store
	$(VENV)/bin/redraw ui

prefect-server: setup   ## Prefect server and UI on http://127.0.0.1:4200 (then PREFECT_API_URL=http://127.0.0.1:4200/api)
	PREFECT_SERVER_ANALYTICS_ENABLED=$${PREFECT_SERVER_ANALYTICS_ENABLED:-false} $(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

mlflow-server: setup    ## MLflow tracking server for sweeps on 127.0.0.1:5000 (HOST=0.0.0.0 to serve other machines)
	mkdir -p mlruns
	$(VENV)/bin/mlflow server --host $${HOST:-127.0.0.1} --port 5000 --workers 1 \
	  --backend-store-uri sqlite:///$(CURDIR)/mlruns/server.db --artifacts-destination $(CURDIR)/mlruns/server-artifacts

sweep-worker: setup     ## one sweep worker: runs one point at a time from the work pool (needs PREFECT_API_URL)
	PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 $(VENV)/bin/prefect worker start --pool redraw-sweep --type process --limit 1

SWEEP ?= flows/sweeps/smoke.yaml
sweep: setup            ## run SWEEP (default flows/sweeps/smoke.yaml) on the work pool's workers
	$(VENV)/bin/python -m flows.sweep $(SWEEP) $(if $(DVC_REMOTE),--dvc-remote $(DVC_REMOTE))

clean-venv:
	rm -rf $(VENV)
