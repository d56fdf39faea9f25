# Prometheus from Debian (2.42 on bookworm): the local stand-in for the public
# prom/prometheus image infra/docker-compose.yml names, with the same entry point
# (`prometheus`, arguments from the compose file) and `wget` for its health check.
# infra/engine.sh builds it from a locally bootstrapped base.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus

USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
