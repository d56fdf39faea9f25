#!/usr/bin/env bash
# Run a command against a RabbitMQ in a container (infra/engine.sh's images), then remove it.
#   infra/with-rabbitmq.sh TAG [CONF] -- COMMAND...
# TAG: bookworm (3.10) or trixie (4.0); CONF: a rabbitmq.conf fragment added to its conf.d.
# The broker publishes on free loopback ports (never the machine's 5672/15672/15692), and
# COMMAND gets AMQP_URL, RABBITMQ_MANAGEMENT_URL and RABBITMQ_METRICS_URL pointing at it;
# PostgreSQL stays whatever the environment (or the default) says.
set -euo pipefail

tag=$1; shift
conf=()
if [ "$1" != -- ]; then conf=(-v "$(realpath "$1"):/etc/rabbitmq/conf.d/90-extra.conf:ro"); shift; fi
[ "$1" = -- ] && shift

name=eventful-rabbitmq-$tag-$$
started=$(date +%s%N)
podman run -d --rm --no-healthcheck --name "$name" "${conf[@]}" \
  -p 127.0.0.1::5672 -p 127.0.0.1::15672 -p 127.0.0.1::15692 \
  "localhost/eventful-rabbitmq:$tag" >/dev/null
trap 'podman rm -f -t 5 "$name" >/dev/null 2>&1' EXIT
port() { podman port "$name" "$1" | head -n1 | cut -d: -f2; }

export AMQP_URL="amqp://guest:guest@127.0.0.1:$(port 5672)//"
export RABBITMQ_MANAGEMENT_URL="http://guest:guest@127.0.0.1:$(port 15672)"
export RABBITMQ_METRICS_URL="http://127.0.0.1:$(port 15692)"
for _ in $(seq 120); do
  curl -sf "$RABBITMQ_MANAGEMENT_URL/api/overview" >/dev/null 2>&1 \
    && curl -sf "$RABBITMQ_METRICS_URL/metrics" >/dev/null 2>&1 && break
  sleep 1
done
version=$(curl -sf "$RABBITMQ_MANAGEMENT_URL/api/overview" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rabbitmq_version"])')
echo "with-rabbitmq: RabbitMQ $version ready in $((($(date +%s%N) - started) / 1000000)) ms" \
  "at $AMQP_URL (management $RABBITMQ_MANAGEMENT_URL)" >&2
"$@"
