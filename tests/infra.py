"""Where the tests find RabbitMQ and PostgreSQL.

Environment first (AMQP_URL, DATABASE_URL, RABBITMQ_MANAGEMENT_URL, pointing at servers the
tests may create vhosts and databases on; RABBITMQ_METRICS_URL, the broker's exporter, beside
them); else, with DOCKER_HOST set or a Docker engine answering on the default socket,
testcontainers; else the local servers (what ``infra/ensure-services.sh`` brings up).
"""

import os
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from shared.core.settings import Settings


@dataclass
class Servers:
    amqp_url: str
    database_url: str
    management_url: str
    #: The broker's exporter; none in the 3-node cluster (tests/cluster), so the default there.
    metrics_url: str = Settings.model_fields["rabbitmq_metrics_url"].default


def _docker_available() -> bool:
    """A Docker API answers (DOCKER_HOST, or the default socket): what testcontainers needs."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no engine behind it: the local servers then
        return False


def servers(stack) -> Servers:
    """With DOCKER_HOST set and no server URLs, containers or an error: an engine too slow
    to answer a ping once sent a whole `make test-containers` run to the local servers."""
    env = {k: os.environ.get(k) for k in ("AMQP_URL", "DATABASE_URL", "RABBITMQ_MANAGEMENT_URL")}
    if not any(env.values()) and (os.environ.get("DOCKER_HOST") or _docker_available()):
        return _containers(stack)
    defaults = Settings.model_fields
    admin_db = make_url(defaults["database_url"].default).set(database="postgres")
    return Servers(
        env["AMQP_URL"] or defaults["amqp_url"].default,
        env["DATABASE_URL"] or admin_db.render_as_string(hide_password=False),
        env["RABBITMQ_MANAGEMENT_URL"] or defaults["rabbitmq_management_url"].default,
        os.environ.get("RABBITMQ_METRICS_URL") or defaults["rabbitmq_metrics_url"].default,
    )


def _containers(stack) -> Servers:
    """RabbitMQ and PostgreSQL started for this session, removed after it. The images are the
    public ones unless TEST_RABBITMQ_IMAGE / TEST_POSTGRES_IMAGE name others (`make
    test-containers` names the ones infra/engine.sh built, where no registry is reachable)."""
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer

    rabbit_image = os.environ.get("TEST_RABBITMQ_IMAGE", "rabbitmq:3.13-management")
    postgres_image = os.environ.get("TEST_POSTGRES_IMAGE", "postgres:16")
    rabbit = stack.enter_context(
        RabbitMqContainer(rabbit_image).with_exposed_ports(5672, 15672, 15692)
    )
    postgres = stack.enter_context(PostgresContainer(postgres_image, driver="psycopg"))
    host = rabbit.get_container_host_ip()
    return Servers(
        f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}//",
        postgres.get_connection_url(),
        f"http://guest:guest@{host}:{rabbit.get_exposed_port(15672)}",
        f"http://{host}:{rabbit.get_exposed_port(15692)}",
    )
