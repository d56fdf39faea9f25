# Every target installs what it needs: a fresh machine needs only `make demo` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# A developer's machine: unset secrets take their local defaults (services refuse them otherwise).
test demo run api bench chaos: export LOCAL_MODE = 1

.PHONY: install services lint format test test-unit test-cluster cluster-up cluster-down \
        test-pg-ha pg-ha-up pg-ha-down \
        migrate topology plan run demo bench bench-publish chaos fuzz api relay beat docs

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

services:
	bash infra/ensure-services.sh

# The docs site (MkDocs, docs/): a broken link, anchor or missing page fails the build.
export NO_MKDOCS_2_WARNING := 1
lint: install
	ruff check .
	ruff format --check .
	lint-imports
	mypy
	mkdocs build --strict --quiet

# The docs site, rebuilt as you edit (8000 is the signup API's).
DOCS_ADDR ?= 127.0.0.1:8010
docs: install
	mkdocs serve --strict -a $(DOCS_ADDR)

format: install
	ruff format .
	ruff check --fix .

# Each pytest worker has its own vhost and database (tests/conftest.py); a module's tests
# stay on one worker, so its module-scoped workers start once.
PYTEST_WORKERS ?= 3
test: install services lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile
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

# 3 PostgreSQL 15 servers under Patroni (etcd as its store) on 5441-5443, beside the
# machine's own; its primary SIGKILLed under load (tests/pg_ha, docs/deploy/postgresql-ha.md).
# Prints the measured failover windows; the cluster is removed whatever the outcome.
test-pg-ha: install services
	$(PY) -m pytest tests/pg_ha -s -p no:cacheprovider; rc=$$?; bash infra/pg_ha.sh down; exit $$rc

pg-ha-up:
	bash infra/pg_ha.sh up

pg-ha-down:
	bash infra/pg_ha.sh down

test-unit: install
	$(PY) -m pytest tests/unit

migrate: install services
	eventful migrate

topology: install services
	eventful topology apply

plan: install services
	eventful topology plan

# The whole system in the foreground until Ctrl-C (infra/run.py).
run: install services migrate topology
	$(PY) -m infra.run

# Real signups through everything `make run` starts; exits 0 only if all were delivered.
demo: install services migrate topology
	$(PY) -m infra.demo

# Every row in one run (the signup API's and the 3-node cluster's too), results in
# var/bench/latest.{json,png} and flame-<program>.svg (untracked: a run leaves the checkout
# as it was).
bench: install services
	$(PY) -m bench.run --cluster

# The last run's results (and its flame graphs, one per process kind) become the published
# ones; every docs build makes the Performance page's table from them (docs/hooks.py).
bench-publish: install
	cp var/bench/latest.json var/bench/latest.png var/bench/flame-*.svg bench/results/
	$(PY) -m bench.report bench/results/latest.json

# Faults injected into CHAOS_EVENTS signups, on private servers (RabbitMQ :5690, PostgreSQL :5433).
CHAOS_EVENTS    ?= 10000
CHAOS_SMTP_DOWN ?= 60
CHAOS_DB_DOWN   ?= 300
CHAOS_PARTITION ?= 150
CHAOS_RATE      ?= 25
# Then the same faults on CHAOS_PG_HA_EVENTS signups with the database on the 3-node Patroni
# cluster (infra/pg_ha.sh), where the PostgreSQL faults become SIGKILL of the primary.
CHAOS_PG_HA_EVENTS ?= 2000
chaos: install
	$(PY) -m infra.chaos --events $(CHAOS_EVENTS) --rate $(CHAOS_RATE) --smtp-down $(CHAOS_SMTP_DOWN) \
	  --db-down $(CHAOS_DB_DOWN) --partition $(CHAOS_PARTITION)
	$(PY) -m infra.chaos --pg-ha --events $(CHAOS_PG_HA_EVENTS) --rate $(CHAOS_RATE) \
	  --smtp-down $(CHAOS_SMTP_DOWN) --partition $(CHAOS_PARTITION)

# Generated messages at the AMQP edge (tests/fuzz): N of them, a random seed unless
# FUZZ_SEED is given; prints the outcomes per reason and every distinct failure, shrunk.
N ?= 20000
# ... and over the trust boundary (tests/fuzz/trust.py), as another service and an upstream.
TRUST_N ?= 2000
fuzz: install services
	FUZZ_MESSAGES=$(N) $(PY) -m pytest tests/integration/test_fuzz_edge.py -q -s
	FUZZ_TRUST_MESSAGES=$(TRUST_N) $(PY) -m pytest tests/integration/test_fuzz_trust.py -q -s

# One worker, as its service declares it (eventful workers lists them):
# make worker-notifier. Run as the service: AMQP_URL=amqp://notifier:PW@host// DATABASE_URL=...
worker-%: install
	eventful worker $*
beat: install
	celery -A services.reports.app beat -l INFO
api: install
	uvicorn services.signup.api:app --host 127.0.0.1 --port 8000
relay: install
	eventful outbox relay signup

# Containers (issue 29): Podman from Debian, its Docker API socket, and the project's images
# built locally (infra/engine.sh). Nothing in `make test` needs them.
test-rabbitmq4 test-containers: export LOCAL_MODE = 1
.PHONY: engine test-rabbitmq4 test-containers
engine:
	bash infra/engine.sh

# The integration suite (or TESTS) against RabbitMQ 4.0 (Debian trixie's) in a container,
# with 4.3's default denials (infra/containers/rabbitmq-4.3.conf); the machine's PostgreSQL.
TESTS ?= tests/integration
test-rabbitmq4: install services
	bash infra/engine.sh rabbitmq
	bash infra/with-rabbitmq.sh trixie infra/containers/rabbitmq-4.3.conf -- \
	  $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(TESTS)

# The integration tests (or TESTS) with no server URLs: testcontainers starts RabbitMQ and
# PostgreSQL for each pytest process, from the images infra/engine.sh built, through
# Podman's Docker API socket (no reaper: its image cannot be pulled; each session removes
# its own containers).
test-containers: install
	bash infra/engine.sh rabbitmq postgres
	eval "$$(bash infra/engine.sh env)"; \
	unset AMQP_URL DATABASE_URL RABBITMQ_MANAGEMENT_URL RABBITMQ_METRICS_URL; \
	TEST_RABBITMQ_IMAGE=localhost/eventful-rabbitmq:bookworm \
	TEST_POSTGRES_IMAGE=localhost/eventful-postgres:15 \
	  $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(TESTS)

# The whole system in containers (infra/docker-compose.yml on the local images), the demo's
# check against it, then everything removed (infra/compose_demo.py).
.PHONY: compose-demo
compose-demo: install
	bash infra/engine.sh
	eval "$$(bash infra/engine.sh env)"; $(PY) -m infra.compose_demo
