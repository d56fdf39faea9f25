"""Where the tests find RabbitMQ and PostgreSQL.

Environment first (AMQP_URL, DATABASE_URL, RABBITMQ_MANAGEMENT_URL, pointing at servers the
tests may create vhosts and databases on; RABBITMQ_METRICS_URL, the broker's exporter, beside
them); else, with a Docker engine, testcontainers; else the local servers (what
``infra/ensure-services.sh`` brings up).
"""

import os
import shutil
import subprocess
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from shared.settings import Settings


@dataclass
class Servers:
    amqp_url: str
    database_url: str
    management_url: str
    #: The broker's exporter; none in the 3-node cluster (tests/cluster), so the default there.
    metrics_url: str = Settings.model_fields["rabbitmq_metrics_url"].default


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def servers(stack) -> Servers:
    env = {k: os.environ.get(k) for k in ("AMQP_URL", "DATABASE_URL", "RABBITMQ_MANAGEMENT_URL")}
    if not any(env.values()) and _docker_available():
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
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer

    rabbit = stack.enter_context(
        RabbitMqContainer("rabbitmq:3.13-management").with_exposed_ports(5672, 15672, 15692)
    )
    postgres = stack.enter_context(PostgresContainer("postgres:16", driver="psycopg"))
    host = rabbit.get_container_host_ip()
    return Servers(
        f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}//",
        postgres.get_connection_url(),
        f"http://guest:guest@{host}:{rabbit.get_exposed_port(15672)}",
        f"http://{host}:{rabbit.get_exposed_port(15692)}",
    )
