#!/usr/bin/env bash
# The chaos run's own RabbitMQ node and PostgreSQL cluster, beside the machine's servers,
# so it can restart them while other test runs use 127.0.0.1:5672 and :5432 undisturbed.
#   infra/private_services.sh up               start (or keep) both; print their URLs
#   infra/private_services.sh down             stop both and delete their data
#   infra/private_services.sh restart-pg       restart the PostgreSQL cluster
#   infra/private_services.sh kill-rabbit      SIGKILL the whole node, then start it again
#   infra/private_services.sh crash-pg         stop -m immediate (no checkpoint, as a crash)
#   infra/private_services.sh start-pg         start the PostgreSQL cluster (after crash-pg)
# Node chaos@localhost: AMQP 127.0.0.1:5690, management 15690, distribution 25690.
# PostgreSQL: Debian cluster "chaos" on 127.0.0.1:5433, trust authentication.
set -euo pipefail

BASE=${CHAOS_DIR:-/var/lib/eventful-chaos}
NODE=chaos@localhost
AMQP_PORT=5690 MGMT_PORT=15690 DIST_PORT=25690 PG_PORT=5433 PG_NAME=chaos

for package in rabbitmq-server postgresql; do
  dpkg -s "$package" >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  }
done
PG_VERSION=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
[ -n "$PG_VERSION" ] || PG_VERSION=$(ls /usr/lib/postgresql | sort -n | tail -1)

ctl() { rabbitmqctl -n "$NODE" "$@"; }
rabbit_running() { ctl ping >/dev/null 2>&1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pg_exists() { pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$PG_VERSION/$PG_NAME"; }

wait_port() {  # wait_port PORT WHAT
  for _ in $(seq 90); do port_open "$1" && return 0; sleep 1; done
  echo "private services: $2 did not open port $1" >&2; return 1
}

rabbit_up() {
  rabbit_running && return 0
  mkdir -p "$BASE/mnesia" "$BASE/log"
  cat > "$BASE/rabbitmq.conf" <<CONF
listeners.tcp.local = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
CONF
  echo '[rabbitmq_management].' > "$BASE/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$BASE"
  (
    export RABBITMQ_NODENAME=$NODE RABBITMQ_DIST_PORT=$DIST_PORT
    export RABBITMQ_MNESIA_BASE=$BASE/mnesia RABBITMQ_LOG_BASE=$BASE/log
    export RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins
    export RABBITMQ_CONFIG_FILE=$BASE/rabbitmq.conf RABBITMQ_PID_FILE=$BASE/pid
    rabbitmq-server -detached
  )
  for _ in $(seq 90); do rabbit_running && break; sleep 1; done
  ctl await_startup >/dev/null
  wait_port "$MGMT_PORT" "the management API of $NODE"
}

rabbit_down() {
  if rabbit_running; then ctl stop >/dev/null 2>&1 || true; fi
  [ -f "$BASE/pid" ] && kill -9 "$(cat "$BASE/pid" 2>/dev/null)" 2>/dev/null || true
  rm -rf "$BASE"
}

rabbit_kill() {  # the node's Erlang VM and its port helpers; never epmd, the machine's
  local pid; pid=$(cat "$BASE/pid")
  pkill -9 -P "$pid" 2>/dev/null || true
  kill -9 "$pid"
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  ! rabbit_running || { echo "private services: $NODE survived SIGKILL" >&2; return 1; }
  rabbit_up
  wait_port "$AMQP_PORT" "$NODE"
}

pg_up() {
  if ! pg_exists; then
    pg_createcluster "$PG_VERSION" "$PG_NAME" -p "$PG_PORT" -- --auth=trust >/dev/null
  fi
  pg_ctlcluster "$PG_VERSION" "$PG_NAME" start 2>/dev/null || true
  wait_port "$PG_PORT" "PostgreSQL cluster $PG_VERSION/$PG_NAME"
}

pg_down() {
  if pg_exists; then pg_dropcluster --stop "$PG_VERSION" "$PG_NAME"; fi
}

case "${1:-}" in
  up)
    rabbit_up
    pg_up
    echo "AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT//"
    echo "RABBITMQ_MANAGEMENT_URL=http://guest:guest@127.0.0.1:$MGMT_PORT"
    echo "DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
    ;;
  down) rabbit_down; pg_down ;;
  restart-pg)
    pg_ctlcluster "$PG_VERSION" "$PG_NAME" restart
    wait_port "$PG_PORT" "PostgreSQL cluster $PG_VERSION/$PG_NAME"
    ;;
  kill-rabbit) rabbit_kill ;;
  crash-pg) pg_ctlcluster "$PG_VERSION" "$PG_NAME" stop -m immediate ;;
  start-pg) pg_up ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
