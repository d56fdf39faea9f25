# Every target installs what it needs: a fresh machine needs only `make demo` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install services lint format test test-unit test-cluster cluster-up cluster-down \
        migrate topology demo

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

services:
	bash infra/ensure-services.sh

lint: install
	ruff check .
	ruff format --check .

format: install
	ruff format .
	ruff check --fix .

test: install services lint
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-cluster

# A 3-node cluster beside the machine's own node; torn down again whatever the outcome.
test-cluster: install services
	bash infra/cluster.sh up
	$(PY) -m pytest tests/cluster; rc=$$?; bash infra/cluster.sh down; exit $$rc

cluster-up:
	bash infra/cluster.sh up

cluster-down:
	bash infra/cluster.sh down

test-unit: install
	$(PY) -m pytest tests/unit

migrate: install services
	$(PY) -m shared.ops migrate

topology: install services
	$(PY) -m shared.ops topology apply

demo: install services migrate topology
	$(PY) -m infra.demo
