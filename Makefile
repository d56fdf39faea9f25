# Every target installs what it needs: a fresh machine needs only `make demo` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install services lint format test test-unit test-cluster cluster-up cluster-down \
        migrate topology plan run demo bench chaos api relay beat \
        worker-signup worker-notifier worker-reports

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
	$(MAKE) --no-print-directory demo

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

plan: install services
	$(PY) -m shared.ops topology plan

# The whole system in the foreground until Ctrl-C (infra/run.py).
run: install services migrate topology
	$(PY) -m infra.run

# Real signups through everything `make run` starts; exits 0 only if all were delivered.
demo: install services migrate topology
	$(PY) -m infra.demo

bench: install services
	$(PY) -m bench.run --cluster
	$(PY) bench/signup.py

# Faults injected into CHAOS_EVENTS signups, on private servers (RabbitMQ :5690, PostgreSQL :5433).
CHAOS_EVENTS    ?= 10000
CHAOS_SMTP_DOWN ?= 60
CHAOS_DB_DOWN   ?= 300
CHAOS_PARTITION ?= 150
CHAOS_RATE      ?= 25
chaos: install
	$(PY) -m infra.chaos --events $(CHAOS_EVENTS) --rate $(CHAOS_RATE) --smtp-down $(CHAOS_SMTP_DOWN) \
	  --db-down $(CHAOS_DB_DOWN) --partition $(CHAOS_PARTITION)

# One process each, as deployed (python -m shared.ops workers prints the same commands).
# Run as the service: AMQP_URL=amqp://notifier:PW@host// DATABASE_URL=... make worker-notifier
worker-signup: install
	METRICS_PORT=9101 celery -A services.signup.app worker -Q signup.tasks -n signup@%h \
	  --pool prefork --autoscale 4,1 --without-gossip -I shared.metrics -l INFO
worker-notifier: install
	METRICS_PORT=9102 celery -A services.notifier.app worker -Q notifier.tasks,notifier.events \
	  -n notifier@%h --pool prefork --autoscale 8,2 --without-gossip -I shared.metrics -l INFO
worker-reports: install
	METRICS_PORT=9103 celery -A services.reports.app worker -Q reports.tasks,reports.events \
	  -n reports@%h --pool prefork --autoscale 4,2 --without-gossip -I shared.metrics -l INFO
beat: install
	celery -A services.reports.app beat -l INFO
api: install
	uvicorn services.signup.api:app --host 127.0.0.1 --port 8000
relay: install
	$(PY) -m shared.outbox relay signup
