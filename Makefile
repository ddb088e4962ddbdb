# LangGraph Checkpoint Mastery. Every target installs what it needs on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup m1 m2 m3 m4 m5 m6 m7 all bench test lint clean clean-all help

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install the project (once; again when pyproject.toml changes)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

m1: setup  ## Milestone 1: SQLite foundation (5 witnesses)
	$(PY) -m shared.runner m1

m2: setup  ## Milestone 2: production-ready SQLite (5 witnesses)
	$(PY) -m shared.runner m2

m3: setup  ## Milestone 3: the migration trigger (metrics, alerts, decision)
	$(PY) -m shared.runner m3

m4: setup  ## Milestone 4: PostgreSQL (provisioning, schema, migration, cutover, many servers)
	$(PY) -m shared.runner m4

m5: setup  ## Milestone 5: PostgreSQL at scale (pooling, indexes at 1M checkpoints, p99 budget, retention)
	$(PY) -m shared.runner m5

m6: setup  ## Milestone 6: the Store (setup and search by meaning, cross-thread memory, 10 KB checkpoints)
	$(PY) -m shared.runner m6

m7: setup  ## Milestone 7: a Redis hot tier over PostgreSQL that loses nothing, and the honest cost of tiering
	$(PY) -m shared.runner m7

all: setup  ## every milestone, then reports/witnesses.{json,md} and the README table
	$(PY) -m shared.runner all --readme

bench: setup  ## long measurements: reports/bench.json and PNG charts (about 7 minutes on 2 cores)
	$(PY) -m shared.benchmarks

test: setup  ## the test suite (what CI runs), then line coverage of shared/
	$(PY) -m pytest --cov=shared --cov-report=term-missing:skip-covered

lint: setup  ## ruff
	$(PY) -m ruff check .

clean:  ## remove data, reports and caches (keeps .venv)
	rm -rf .data reports .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

clean-all: clean  ## also remove .venv
	rm -rf $(VENV)
