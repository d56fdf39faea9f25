"""A private vhost and database for one benchmark run, removed afterwards."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

from kombu import Connection
from sqlalchemy import create_engine, make_url, text

from infra.scratch import put_scratch_vhost
from shared.core.db import ensure_database, migrate
from shared.core.settings import Settings
from shared.core.topology import SERVICES, declare_all
from shared.ops.management import Management


@dataclass
class BenchEnv:
    amqp_url: str
    database_url: str
    management: Management
    vhost: str

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "AMQP_URL": self.amqp_url, "DATABASE_URL": self.database_url,
                **extra}  # fmt: skip


@contextmanager
def bench_env(settings: Settings) -> Iterator[BenchEnv]:
    suffix = uuid4().hex[:8]
    vhost = f"bench-{suffix}"
    # Creating a vhost takes seconds on a broker that holds many (other runs, tests).
    management = Management(settings.rabbitmq_management_url, timeout=90)
    database_url = make_url(settings.database_url).set(database=f"eventful_bench_{suffix}")
    database_url = database_url.render_as_string(hide_password=False)
    try:  # a PUT that timed out may still create the vhost: remove it whatever happened
        put_scratch_vhost(management, vhost)
        base = urlsplit(settings.amqp_urls[0])
        management.grant(vhost, base.username or "guest")
        ensure_database(database_url)
        for name in SERVICES:
            migrate(database_url, name)
        amqp_url = ";".join(
            urlunsplit(urlsplit(url)._replace(path="/" + vhost)) for url in settings.amqp_urls
        )
        env = BenchEnv(amqp_url, database_url, management, vhost)
        with Connection(env.amqp_url) as conn:
            declare_all(conn)
        yield env
    finally:
        management.delete_vhost(vhost)
        admin = create_engine(make_url(database_url).set(database="postgres"),
                              isolation_level="AUTOCOMMIT")  # fmt: skip
        with admin.connect() as conn:
            name = make_url(database_url).database
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
