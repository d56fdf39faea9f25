#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on loopback, beside the machine's own node, from Debian's
# rabbitmq-server: nodes c1..c3@localhost, AMQP 5681-5683, management 15681-15683.
#   infra/cluster.sh up          start (or keep) all three nodes and cluster them
#   infra/cluster.sh down        stop them and delete their data
#   infra/cluster.sh start N     (re)start node N and let it rejoin
#   infra/cluster.sh kill N      SIGKILL node N (what a crash looks like)
#   infra/cluster.sh pid N       print node N's OS pid
#   infra/cluster.sh status      cluster status as seen from the first running node
set -euo pipefail

BASE=${CLUSTER_DIR:-/var/lib/eventful-cluster}
NODES=(1 2 3)

command -v rabbitmq-server >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
}

node_env() {  # export the environment that makes node $1 its own node
  local i=$1 dir=$BASE/c$1
  export RABBITMQ_NODENAME=c$i@localhost
  export RABBITMQ_DIST_PORT=$((25680 + i))
  export RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
  export RABBITMQ_PID_FILE=$dir/pid
}

prepare() {
  local i=$1 dir=$BASE/c$1
  mkdir -p "$dir/mnesia" "$dir/log"
  cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.local = 127.0.0.1:$((5680 + i))
management.tcp.ip = 127.0.0.1
management.tcp.port = $((15680 + i))
CONF
  echo '[rabbitmq_management].' > "$dir/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$BASE"
}

ctl() { local i=$1; shift; rabbitmqctl -n "c$i@localhost" "$@"; }

running() { ctl "$1" ping >/dev/null 2>&1; }

start_node() {
  local i=$1
  running "$i" && return 0
  prepare "$i"
  (node_env "$i"; rabbitmq-server -detached)
  for _ in $(seq 90); do running "$i" && break; sleep 1; done
  running "$i" || { echo "cluster: node c$i did not start" >&2; return 1; }
  ctl "$i" await_startup >/dev/null
  if [ "$i" != 1 ] && ! ctl "$i" cluster_status 2>/dev/null | grep -q "c1@localhost"; then
    ctl "$i" stop_app >/dev/null
    ctl "$i" join_cluster c1@localhost >/dev/null
    ctl "$i" start_app >/dev/null
  fi
  for _ in $(seq 60); do
    (exec 3<>"/dev/tcp/127.0.0.1/$((15680 + i))") 2>/dev/null && return 0; sleep 1
  done
  echo "cluster: management API of c$i did not come up" >&2; return 1
}

case "${1:-}" in
  up)
    for i in "${NODES[@]}"; do start_node "$i"; done
    ctl 1 cluster_status | sed -n '/Running Nodes/,/^$/p'
    echo "cluster: AMQP 127.0.0.1:5681-5683, management http://127.0.0.1:15681-15683 (guest/guest)"
    ;;
  down)
    for i in "${NODES[@]}"; do
      if running "$i"; then ctl "$i" stop >/dev/null 2>&1 || true; fi
      [ -f "$BASE/c$i/pid" ] && kill -9 "$(cat "$BASE/c$i/pid")" 2>/dev/null || true
    done
    rm -rf "$BASE"
    ;;
  start) start_node "$2" ;;
  kill) kill -9 "$(cat "$BASE/c$2/pid")" ;;
  pid) cat "$BASE/c$2/pid" ;;
  status)
    for i in "${NODES[@]}"; do
      if running "$i"; then ctl "$i" cluster_status; exit 0; fi
    done
    echo "cluster: no node running" >&2; exit 1
    ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
