# PostgreSQL 15 from Debian, configured at first start the way the public postgres image is
# (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB), so compose files and testcontainers'
# PostgresContainer use either. infra/engine.sh builds it from a locally bootstrapped base.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY --chmod=755 infra/containers/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint

USER postgres
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
EXPOSE 5432
HEALTHCHECK --interval=5s --timeout=5s --start-period=20s CMD pg_isready -h 127.0.0.1 -q
ENTRYPOINT ["postgres-entrypoint"]
CMD ["postgres"]
