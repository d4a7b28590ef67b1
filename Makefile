# CitySafe Lake: `make run` runs the pipeline on the embedded engine, `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_PYTHON_DOWNLOADS := never
# Byte-compile the venvs at install: with PYTHONDONTWRITEBYTECODE set (as on this machine) every process
# would otherwise compile each module it imports, every time (measured: 3 of the 7 s an MLflow log took).
export UV_COMPILE_BYTECODE := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1
export SPARK_LOCAL_IP := 127.0.0.1

PIPELINE := .venv/pipeline
AIRFLOW := .venv/airflow
SUPERSET := .venv/superset
CITYSAFE := $(PIPELINE)/bin/citysafe
PII_KEY_FILE := var/secrets/pii.key
# The PII key comes from the environment; for local runs one is made once under var/ (never committed).
PII_KEY = $${CITYSAFE_PII_KEY:-$$(cat $(PII_KEY_FILE))}

.PHONY: help setup run serve test test-fast lint format lock clean
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m pip install --quiet --user uv

$(PIPELINE)/.synced: requirements/pipeline.txt pyproject.toml | $(UV)
	test -x $(PIPELINE)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(PIPELINE)
	VIRTUAL_ENV=$(PIPELINE) $(UV) pip sync --quiet requirements/pipeline.txt
	VIRTUAL_ENV=$(PIPELINE) $(UV) pip install --quiet --no-deps -e .
	touch $@

$(AIRFLOW)/.synced: requirements/airflow.txt | $(UV)
	test -x $(AIRFLOW)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(AIRFLOW)
	VIRTUAL_ENV=$(AIRFLOW) $(UV) pip sync --quiet requirements/airflow.txt
	touch $@

$(SUPERSET)/.synced: requirements/superset.txt | $(UV)
	test -x $(SUPERSET)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(SUPERSET)
	VIRTUAL_ENV=$(SUPERSET) $(UV) pip sync --quiet requirements/superset.txt
	touch $@

$(PII_KEY_FILE):
	mkdir -p $(dir $@) && umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_hex(32))' > $@

setup: $(PIPELINE)/.synced $(AIRFLOW)/.synced $(SUPERSET)/.synced  ## build the venvs from the lock files (idempotent)

# CITY=chicago (or nyc): the city profile config/cities/$(CITY).yaml instead of the synthetic city
CITY_CONFIG = $(if $(CITY),CITYSAFE_CONFIG=config/cities/$(CITY).yaml)

run: setup $(PII_KEY_FILE)  ## the whole pipeline on the embedded engine (Sail); CITY=chicago|nyc for a real city
	$(if $(CITY),test -f config/cities/$(CITY).yaml || { echo "no city profile config/cities/$(CITY).yaml (have: $$(ls config/cities | sed 's/.yaml//' | tr '\n' ' '))"; exit 2; })
	CITYSAFE_PII_KEY=$(PII_KEY) $(CITY_CONFIG) $(CITYSAFE) run

serve: setup $(PII_KEY_FILE)  ## the analysts' dashboards (Superset) on the served warehouse; prints URL and login
	$(CITYSAFE) serve

# The Airflow suite (its own venv, mostly waiting on `airflow dags test` subprocesses) runs beside the
# pipeline suite; its output is printed when both are done and either failing fails the target.
test: setup lint  ## lint, then the full test suite (pipeline venv and, beside it, the Airflow venv)
	@mkdir -p var && log=var/test-airflow.log; \
	$(AIRFLOW)/bin/python -m pytest tests/airflow -q -p no:cacheprovider --durations=5 > $$log 2>&1 & airflow=$$!; \
	$(PIPELINE)/bin/python -m pytest tests --ignore=tests/airflow -q -p no:cacheprovider --durations=15 -n 2 --dist loadgroup; \
	pipeline=$$?; wait $$airflow; airflow_rc=$$?; \
	echo "--- Airflow suite (tests/airflow, ran beside the pipeline suite) ---"; cat $$log; \
	test $$pipeline -eq 0 && test $$airflow_rc -eq 0

lint: setup  ## ruff: lint rules and formatting (configured in pyproject.toml)
	$(PIPELINE)/bin/ruff check .
	$(PIPELINE)/bin/ruff format --check .

format: setup  ## apply ruff's fixes and formatting
	$(PIPELINE)/bin/ruff check --fix .
	$(PIPELINE)/bin/ruff format .

test-fast: setup  ## the suite without the slow end-to-end tests
	$(PIPELINE)/bin/python -m pytest tests --ignore=tests/airflow -q -m "not slow" -p no:cacheprovider -n 2 --dist loadgroup

lock:  ## re-resolve the lock files after editing requirements/*.in
	$(UV) pip compile --quiet requirements/pipeline.in -o requirements/pipeline.txt --python $(PYTHON) --python-version 3.11
	$(UV) pip compile --quiet requirements/airflow.in -o requirements/airflow.txt --python $(PYTHON) --python-version 3.11
	$(UV) pip compile --quiet requirements/superset.in -o requirements/superset.txt --python $(PYTHON) --python-version 3.11

clean:  ## remove the lake, warehouse and generated data under var/ (keeps venvs and the PII key)
	rm -rf var/lake var/warehouse var/synthetic var/airflow
