#!/usr/bin/env bash
# A container engine on this machine, and the project's images built locally.
#   infra/engine.sh [GROUP...]  install Podman (Debian's, rootful, runc), start its Docker API
#                               socket, build the base images and the project's images: all,
#                               or the groups named (rabbitmq, postgres, app, compose)
#   infra/engine.sh env         print the variables that point a Docker client (and
#                               testcontainers) at that socket
# Idempotent, like infra/ensure-services.sh: what is there already is kept. It never binds
# the machine's own ports (5672, 5432, ...): containers publish on ports their callers pick.
# No image registry is reachable here, so base images come from debootstrap and the
# machine's Debian mirror; elsewhere the Dockerfiles' default bases (public images) serve.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SOCKET=${PODMAN_SOCKET:-/run/podman/podman.sock}
STATE=${ENGINE_DIR:-/var/lib/eventful-engine}
RABBITMQ_SUITES=${RABBITMQ_SUITES:-bookworm trixie}  # 3.10 (the machine's) and 4.0

say() { echo "engine: $*" >&2; }

install_engine() {
  local missing=()
  for cmd in podman runc debootstrap; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman runc debootstrap uidmap \
    containernetworking-plugins iptables >/dev/null
}

# crun (Podman's default) stops on this machine's hybrid cgroups; containers may ask for no
# more than the host's hard limits, and Podman's default nofile is above them.
configure_engine() {
  local conf=/etc/containers/containers.conf.d/eventful.conf
  mkdir -p "$(dirname "$conf")"
  cat > "$conf.new" <<CONF
[containers]
default_ulimits = ["nofile=$(hard -Hn 1048576)", "nproc=$(hard -Hu 32768)"]

[engine]
runtime = "runc"
CONF
  mv "$conf.new" "$conf"
}

hard() {  # ulimit-flag cap: "soft:hard" at the host's hard limit, at most cap
  local n; n=$(ulimit "$1"); [ "$n" = unlimited ] && n=$2; n=$((n < $2 ? n : $2)); echo "$n:$n"
}

answering() { curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }

start_service() {
  answering && return 0
  mkdir -p "$(dirname "$SOCKET")" "$STATE"
  say "starting podman system service on $SOCKET"
  setsid nohup podman system service --time=0 "unix://$SOCKET" >"$STATE/service.log" 2>&1 &
  for _ in $(seq 30); do answering && return 0; sleep 1; done
  say "the Docker API socket did not answer: $STATE/service.log"; return 1
}

# The machine's own Debian mirror (a deb822 or one-line source), for debootstrap.
mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1)
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1)
  echo "$uri"
}

has_image() { podman image exists "$1"; }
size() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%d MB", $1 / 1e6}'; }

base_image() {  # suite: localhost/eventful-debian:SUITE, a minbase debootstrap
  local suite=$1 image=localhost/eventful-debian:$1 dir
  has_image "$image" && return 0
  mkdir -p "$STATE"
  dir=$(mktemp -d "$STATE/debootstrap-$suite.XXXX")
  say "debootstrap $suite (minbase) from $(mirror)"
  debootstrap --variant=minbase "$suite" "$dir" "$(mirror)" >"$STATE/debootstrap-$suite.log" 2>&1
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | podman import -q --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
  rm -rf "$dir"
  say "$image: ${SECONDS}s since start, $(size "$image")"
}

build() {  # image dockerfile build-arg... (every time: the layer cache makes it quick)
  local image=$1 file=$2; shift 2
  podman build --network host --format docker -q -t "$image" -f "$file" \
    --secret "id=pip_cert,src=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" \
    "${@/#/--build-arg=}" "$ROOT" >/dev/null
  say "$image: ${SECONDS}s since start, $(size "$image")"
}

rabbitmq() {
  local suite
  for suite in $RABBITMQ_SUITES; do
    base_image "$suite"
    build "localhost/eventful-rabbitmq:$suite" infra/containers/rabbitmq.Dockerfile \
      "BASE=localhost/eventful-debian:$suite"
  done
}

postgres() {
  base_image bookworm
  build localhost/eventful-postgres:15 infra/containers/postgres.Dockerfile \
    BASE=localhost/eventful-debian:bookworm
}

app() {
  base_image bookworm
  build localhost/eventful-python:3.11 infra/containers/python.Dockerfile \
    BASE=localhost/eventful-debian:bookworm
  build localhost/eventful:latest infra/Dockerfile BASE=localhost/eventful-python:3.11
}

prometheus() {
  base_image bookworm
  build localhost/eventful-prometheus:bookworm infra/containers/prometheus.Dockerfile \
    BASE=localhost/eventful-debian:bookworm
}

# docker-compose v1 (Debian's; the v2 plugin is not packaged) for the compose files, and the
# CNI plugin that lets containers find each other by service name.
compose() {
  command -v docker-compose >/dev/null && [ -e /usr/lib/cni/dnsname ] && return 0
  say "installing docker-compose and the dnsname CNI plugin from Debian packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker-compose golang-github-containernetworking-plugin-dnsname >/dev/null
}

case "${1:-all}" in
  env)
    echo "export DOCKER_HOST=unix://$SOCKET TESTCONTAINERS_RYUK_DISABLED=true" \
      "TESTCONTAINERS_CONNECTION_MODE=docker_host"
    exit 0 ;;
  all) set -- rabbitmq postgres app prometheus compose ;;
esac
cd "$ROOT"
install_engine
configure_engine
start_service
for group in "$@"; do
  case $group in
    rabbitmq | postgres | app | prometheus | compose) "$group" ;;
    *) say "unknown group $group (rabbitmq, postgres, app, prometheus, compose; or env)"; exit 2 ;;
  esac
done
say "ready: $(podman --version), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'), socket $SOCKET"
