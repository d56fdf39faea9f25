#!/usr/bin/env bash
# Three PostgreSQL 15 servers on loopback under Patroni, with one etcd as Patroni's store,
# beside the machine's own PostgreSQL (never 5432), from Debian's patroni and etcd-server.
# PostgreSQL 5441-5443, Patroni's REST API 8441-8443, etcd 2391 (peer 2392).
#   infra/pg_ha.sh up          start (or keep) etcd and all three nodes; wait for a primary
#                              and two streaming replicas; print the database URL
#   infra/pg_ha.sh down        stop everything and delete the data
#   infra/pg_ha.sh start N     (re)start node N (it rejoins as a replica, rewound if need be)
#   infra/pg_ha.sh kill N      SIGKILL node N's Patroni and PostgreSQL (a lost server)
#   infra/pg_ha.sh status      the cluster as Patroni sees it
# PG_HA_SYNCHRONOUS=false starts the cluster with asynchronous replication (the setting is
# Patroni's synchronous_mode, changeable live: PATCH /config on any node's REST API).
set -euo pipefail

BASE=${PG_HA_DIR:-${TMPDIR:-/tmp}/eventful-pg-ha}
NODES=(1 2 3)
SYNCHRONOUS=${PG_HA_SYNCHRONOUS:-true}
ETCD_PORT=2391 ETCD_PEER=2392
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)

for package in patroni etcd-server postgresql; do
  dpkg -s "$package" >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "$package" >/dev/null
  }
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
as_postgres() { runuser -u postgres -- "$@"; }

etcd_up() {
  alive "$BASE/etcd.pid" && return 0
  mkdir -p "$BASE/etcd"
  setsid etcd --name pg-ha --data-dir "$BASE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "pg-ha=http://127.0.0.1:$ETCD_PEER" \
    >"$BASE/etcd.log" 2>&1 </dev/null &
  echo $! > "$BASE/etcd.pid"
  for _ in $(seq 120); do port_open "$ETCD_PORT" && return 0; sleep 1; done
  echo "pg-ha: etcd did not open port $ETCD_PORT" >&2; return 1
}

config() {  # the Patroni configuration of node $1
  local i=$1 dir=$BASE/pg$1
  cat <<YAML
scope: eventful
namespace: /eventful-pg-ha/
name: pg$i
restapi:
  listen: 127.0.0.1:$((8440 + i))
  connect_address: 127.0.0.1:$((8440 + i))
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    # The leader key expires ttl s after its holder's last renewal: the failover takes that
    # long plus a loop; loop_wait + 2 * retry_timeout must stay within ttl.
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: $SYNCHRONOUS
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: "on"
        max_connections: 200
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$((5440 + i))
  connect_address: 127.0.0.1:$((5440 + i))
  data_dir: $dir/data
  bin_dir: $BIN
  pgpass: $dir/pgpass
  authentication:
    superuser: {username: postgres}
    replication: {username: replicator}
    rewind: {username: postgres}
  parameters:
    unix_socket_directories: $dir
YAML
}

start_node() {
  local i=$1 dir=$BASE/pg$1
  alive "$dir/patroni.pid" && return 0
  mkdir -p "$dir"
  config "$i" > "$dir/patroni.yml"
  chown -R postgres:postgres "$dir"
  chmod 700 "$dir"
  setsid runuser -u postgres -- patroni "$dir/patroni.yml" >>"$dir/patroni.log" 2>&1 </dev/null &
  echo $! > "$dir/patroni.pid"
}

kill_node() {  # Patroni, then its postmaster and every backend: nothing exits in order
  local dir=$BASE/pg$1 pid
  pkill -9 -s "$(cat "$dir/patroni.pid")" 2>/dev/null || true
  if [ -f "$dir/data/postmaster.pid" ]; then
    pid=$(head -n1 "$dir/data/postmaster.pid")
    pkill -9 -P "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/patroni.pid"
}

members() {  # GET /cluster of Patroni's REST API on port $1
  python3 -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://127.0.0.1:$1/cluster" 2>/dev/null
}

healthy() {  # the primary streams WAL to both replicas
  local i
  for i in "${NODES[@]}"; do
    [ "$(psql -h 127.0.0.1 -p $((5440 + i)) -U postgres -d postgres -Atc \
      "SELECT pg_is_in_recovery() OR (SELECT count(*) < 2 FROM pg_stat_replication
       WHERE state = 'streaming')" 2>/dev/null)" = f ] && return 0
  done
  return 1
}

url() {
  echo "postgresql+psycopg://postgres@/postgres?host=127.0.0.1,127.0.0.1,127.0.0.1&port=5441,5442,5443&target_session_attrs=read-write"
}

case "${1:-}" in
  up)
    mkdir -p "$BASE"
    etcd_up
    for i in "${NODES[@]}"; do start_node "$i"; done
    # Three checks in a row: a replica just bootstrapped restarts once more.
    steady=0
    for _ in $(seq 180); do
      if healthy; then steady=$((steady + 1)); else steady=0; fi
      [ "$steady" -ge 3 ] && break
      sleep 1
    done
    if [ "$steady" -lt 3 ]; then
      tail -n 5 "$BASE"/pg*/patroni.log >&2
      echo "pg-ha: no primary with two streaming replicas; see $BASE/pg*/patroni.log" >&2
      exit 1
    fi
    echo "DATABASE_URL=$(url)"
    ;;
  down)
    for i in "${NODES[@]}"; do [ -f "$BASE/pg$i/patroni.pid" ] && kill_node "$i"; done
    if alive "$BASE/etcd.pid"; then kill -9 "$(cat "$BASE/etcd.pid")"; fi
    rm -rf "$BASE"
    ;;
  start) start_node "$2" ;;
  kill) kill_node "$2" ;;
  status) members 8441 || members 8442 || members 8443 ;;
  url) url ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
