# Two commands for a fresh machine (Python 3.11 + make + the package registries):
#   make demo   set everything up and run the main job (data -> weekly runs -> bundles -> registry)
#   make test   set everything up and run the whole test suite
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
export MODEL_FACTORY_HOME ?= $(CURDIR)/.model_factory
export DAGSTER_HOME ?= $(MODEL_FACTORY_HOME)/dagster
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test ui lint format contracts clean bench-feast

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/model-factory demo

test: $(STAMP)
	-bash scripts/ensure-browser.sh  # not fatal either: a non-root machine without Chromium skips the browser test loudly (CI: .ci/run)
	-bash scripts/ensure-postgres.sh  # not fatal here: without a server those tests skip loudly (CI: .ci/run)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -n 2 --dist loadgroup

# $(DAGSTER_HOME)/dagster.yaml from dagster.yaml, or from dagster.postgres.yaml with
# MODEL_FACTORY_INSTANCE=postgres (and DAGSTER_PG_*): the same rule as the CLI's.
ui: $(STAMP)
	$(VENV)/bin/python -c 'from model_factory.core.settings import Settings; Settings.from_env().ensure_dagster_home()'
	$(VENV)/bin/dagster dev -w workspace.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

contracts: $(STAMP)
	$(VENV)/bin/model-factory contracts export

# The real Feast as a peer in benchmarks/frame_build.py (feast_offline_store), in a venv of its
# own: its pins could clash with dagster's. Not needed by demo or test.
.venv-feast/.installed: benchmarks/requirements-feast.txt
	$(PYTHON) -m venv .venv-feast
	.venv-feast/bin/python -m pip install --quiet --upgrade pip
	.venv-feast/bin/python -m pip install --quiet -r benchmarks/requirements-feast.txt
	touch .venv-feast/.installed

bench-feast: .venv-feast/.installed

clean:
	rm -rf $(MODEL_FACTORY_HOME)
