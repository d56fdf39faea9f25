"""Session fixtures: a private vhost and database on real servers, migrated and declared."""

import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit
from uuid import uuid4

import psycopg
import pytest
from kombu import Connection
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from infra.scratch import put_scratch_vhost
from shared.core.db import migrate
from shared.core.settings import get_settings
from shared.core.topology import SERVICES, UNROUTED, declare_all
from shared.ops.management import Management
from tests.infra import Servers, servers
from tests.support import SmtpSink, Worker, drain

pytest_plugins = ["tests.signup_fixtures", "tests.service_users"]


@dataclass
class Stack:
    amqp_url: str
    database_url: str
    management_url: str
    metrics_url: str
    vhost: str
    log_dir: Path
    smtp: SmtpSink
    env: dict[str, str] = field(default_factory=dict)

    def worker(self, service: str, *extra: str, **env: str) -> Worker:
        return Worker(service, {**self.env, **env}, self.log_dir, *extra)

    def deployed_worker(self, service: str, **env: str) -> Worker:
        """The service's worker with the pool and concurrency it is deployed with."""
        return Worker.deployed(service, {**self.env, **env}, self.log_dir)

    def purge(self, *queues: str) -> None:
        with Connection(self.amqp_url) as conn:
            channel = conn.channel()
            for queue in queues:
                channel.queue_purge(queue)

    def dead_letters(self, service: str) -> list:
        return drain(self.amqp_url, f"{service}.dlq")


def _with_vhost(amqp_url: str, vhost: str) -> str:
    parts = urlsplit(amqp_url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def _pg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def build_stack(base: Servers, cleanup: ExitStack, log_dir: Path) -> Stack:
    """A private vhost and database on ``base``, migrated and declared, made this process's
    configuration (environment) and the one handed to every worker it starts."""
    suffix = uuid4().hex[:8]
    vhost = f"test-{suffix}"
    management = Management(base.management_url)
    put_scratch_vhost(management, vhost)
    cleanup.callback(management.delete_vhost, vhost)
    management.grant(vhost, urlsplit(base.amqp_url.split(";")[0]).username or "guest")

    db_name = f"eventful_test_{suffix}"
    admin_url = _pg_url(base.database_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    cleanup.callback(_drop_database, admin_url, db_name)
    database_url = make_url(base.database_url).set(database=db_name)
    database_url = database_url.render_as_string(hide_password=False)

    smtp = SmtpSink().start()
    cleanup.callback(smtp.stop)

    amqp_url = ";".join(_with_vhost(url, vhost) for url in base.amqp_url.split(";"))
    stack = Stack(
        amqp_url=amqp_url,
        database_url=database_url,
        management_url=base.management_url,
        metrics_url=base.metrics_url,
        vhost=vhost,
        log_dir=log_dir,
        smtp=smtp,
    )
    stack.env = {
        **os.environ,
        "AMQP_URL": stack.amqp_url,
        "DATABASE_URL": database_url,
        "RABBITMQ_MANAGEMENT_URL": base.management_url,
        "RABBITMQ_METRICS_URL": base.metrics_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "RETRY_DELAY_SCALE": "0.01",
        "LOCAL_MODE": "1",  # what `make test` sets: the local default passwords are accepted
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    os.environ.update({k: v for k, v in stack.env.items() if k != "PYTHONPATH"})
    get_settings.cache_clear()

    for name in SERVICES:
        migrate(database_url, name)
    with Connection(stack.amqp_url) as conn:
        declare_all(conn)
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with ExitStack() as cleanup:
        yield build_stack(servers(cleanup), cleanup, tmp_path_factory.mktemp("logs"))


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(stack: Stack) -> Iterator[Engine]:
    """An engine on the session's database, to read what the services wrote."""
    engine = create_engine(stack.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_queues(stack: Stack) -> Stack:
    """Start from empty queues, so a test sees only the messages it caused."""
    queues = [UNROUTED]
    for topo in SERVICES.values():
        queues += [q.name for q in topo.work_queues()] + [topo.dlq]
    stack.purge(*queues)
    return stack


@pytest.fixture
def reports_worker(clean_queues: Stack) -> Iterator[Worker]:
    """A started reports worker (a test module with other needs defines its own)."""
    worker = clean_queues.worker("reports").start()
    yield worker
    worker.stop()
