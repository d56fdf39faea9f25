"""Where the tests find RabbitMQ and PostgreSQL.

Environment first (AMQP_URL, DATABASE_URL, RABBITMQ_MANAGEMENT_URL, pointing at servers the
tests may create vhosts and databases on); else, with a Docker engine, testcontainers;
else the local servers (what ``infra/ensure-services.sh`` brings up).
"""

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass
class Servers:
    amqp_url: str
    database_url: str
    management_url: str


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def servers(stack) -> Servers:
    env = {k: os.environ.get(k) for k in ("AMQP_URL", "DATABASE_URL", "RABBITMQ_MANAGEMENT_URL")}
    if all(env.values()):
        return Servers(env["AMQP_URL"], env["DATABASE_URL"], env["RABBITMQ_MANAGEMENT_URL"])
    if not any(env.values()) and _docker_available():
        return _containers(stack)
    return Servers(
        env["AMQP_URL"] or "amqp://guest:guest@127.0.0.1:5672//",
        env["DATABASE_URL"] or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        env["RABBITMQ_MANAGEMENT_URL"] or "http://guest:guest@127.0.0.1:15672",
    )


def _containers(stack) -> Servers:
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer

    rabbit = stack.enter_context(
        RabbitMqContainer("rabbitmq:3.13-management").with_exposed_ports(5672, 15672)
    )
    postgres = stack.enter_context(PostgresContainer("postgres:16", driver="psycopg"))
    host = rabbit.get_container_host_ip()
    return Servers(
        f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}//",
        postgres.get_connection_url(),
        f"http://guest:guest@{host}:{rabbit.get_exposed_port(15672)}",
    )
