# PostgreSQL 15 under Patroni, from Debian (the packages infra/pg_ha.sh installs), with
# etcd-server in the same image so that infra/docker-compose.pg-ha.yml needs no other.
# Each node is configured by infra/containers/patroni.yml plus PATRONI_* variables.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       postgresql-15 patroni etcd-server curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data \
    && chown -R postgres:postgres /var/lib/postgresql
COPY infra/containers/patroni.yml /etc/patroni/patroni.yml

USER postgres
ENV PATH=/usr/lib/postgresql/15/bin:$PATH
EXPOSE 5432 8008
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s CMD curl -fsS http://127.0.0.1:8008/health
CMD ["patroni", "/etc/patroni/patroni.yml"]
