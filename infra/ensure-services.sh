#!/usr/bin/env bash
# Make RabbitMQ (with its management API) and PostgreSQL reachable on this machine.
# Order: use what already answers; else start the local servers; else install them
# from Debian packages and start them. Idempotent; safe to run before every command.
set -euo pipefail

AMQP_HOST=${AMQP_HOST:-127.0.0.1}
PG_HOST=${PG_HOST:-127.0.0.1}

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() {  # host port what seconds
  for _ in $(seq "$4"); do listening "$1" "$2" && return 0; sleep 1; done
  echo "ensure-services: $3 did not come up on $1:$2" >&2; return 1
}

install_packages() {
  echo "ensure-services: installing $* from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq ${APT_FLAGS:-} "$@" >/dev/null
}

if ! listening "$PG_HOST" 5432; then
  command -v pg_ctlcluster >/dev/null || install_packages postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for "$PG_HOST" 5432 PostgreSQL 60
fi

if ! listening "$AMQP_HOST" 5672; then
  command -v rabbitmq-server >/dev/null || install_packages rabbitmq-server
  rabbitmq-server -detached || true
  wait_for "$AMQP_HOST" 5672 RabbitMQ 90
fi

# The management API is part of the product (topology, dead-letter tools, tests).
if ! listening "$AMQP_HOST" 15672; then
  rabbitmqctl await_startup >/dev/null 2>&1 || true
  rabbitmq-plugins enable --quiet rabbitmq_management rabbitmq_shovel rabbitmq_shovel_management >/dev/null
  wait_for "$AMQP_HOST" 15672 "RabbitMQ management API" 60
fi
# Queue depths and consumers come from RabbitMQ's own exporter (scraped by `make run`'s
# Prometheus), read once per broker however many workers run.
if ! listening "$AMQP_HOST" 15692; then
  rabbitmq-plugins enable --quiet rabbitmq_prometheus >/dev/null
  wait_for "$AMQP_HOST" 15692 "RabbitMQ Prometheus exporter" 60
fi

# Prometheus and promtool for `make run` (which starts its own Prometheus with a generated
# configuration) and the alert-rule tests. The package starts and enables a system instance
# on :9090 where services start on install: stop and disable the one this script installed.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  APT_FLAGS=--no-install-recommends install_packages prometheus
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    invoke-rc.d prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi
echo "ensure-services: RabbitMQ $AMQP_HOST:5672 (management :15672, metrics :15692)," \
  "PostgreSQL $PG_HOST:5432, $(prometheus --version 2>&1 | head -n1) ready"
