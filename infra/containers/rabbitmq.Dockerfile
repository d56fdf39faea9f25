# RabbitMQ from Debian's rabbitmq-server, with the plugins the project uses (management,
# shovel, prometheus). BASE picks the release: debian:bookworm-slim gives 3.10 (what
# infra/ensure-services.sh installs), debian:trixie-slim 4.0. infra/engine.sh builds it from
# a locally bootstrapped base instead of a registry's.
#   docker build -f infra/containers/rabbitmq.Dockerfile --build-arg BASE=debian:trixie-slim .
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && rabbitmq-plugins enable --offline rabbitmq_management rabbitmq_shovel \
       rabbitmq_shovel_management rabbitmq_prometheus >/dev/null \
    && mkdir -p /etc/rabbitmq/conf.d && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq
COPY infra/containers/rabbitmq.conf /etc/rabbitmq/conf.d/10-eventful.conf

USER rabbitmq
ENV HOME=/var/lib/rabbitmq
EXPOSE 5672 15672 15692
HEALTHCHECK --interval=5s --timeout=10s --start-period=30s CMD rabbitmq-diagnostics -q ping
CMD ["rabbitmq-server"]
