"""PostgreSQL access: one engine per process, a transaction per unit of work, migrations."""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DisconnectionError

from shared.core.system import declaration

#: Connections a process keeps once it has needed them (the pool opens them lazily, so a
#: worker using one keeps one): a web API's request threads (its ``API_THREADS``) and its
#: after-commit thread fit, so a burst no longer opens connections only to close them at
#: checkin (with 5 kept and 40 threads, psycopg's connect was 6 % of an API's CPU).
POOL_SIZE = 20


class Database:
    """Creates its engine lazily and again after a fork: connections never cross processes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._pid = 0

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            self._engine = create_engine(self.url, pool_size=POOL_SIZE)
            ping_when_idle(self._engine)
            self._pid = os.getpid()
        return self._engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection whose work commits when the block ends and rolls back if it raises.
        A Core connection, not an ORM session: statements are all the platform and its
        services run, and a session is more work in every transaction for nothing here."""
        with self.engine.begin() as connection:
            yield connection

    def autocommit(self, statement: Any, params: dict[str, Any]) -> None:
        """One statement, committed when it returns: no BEGIN and COMMIT round trips, for a
        write that is whole or absent on its own (its pooled connection's isolation level
        is restored when it goes back to the pool)."""
        with self.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(statement, params)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


#: Seconds a pooled connection may rest before its next use is preceded by a ping.
PING_AFTER_IDLE = 1.0


def ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, but only for a connection that rested ``PING_AFTER_IDLE`` s: a
    database restart while it rested is met by the ping (the pool replaces it and the
    caller never knows), as with ``pool_pre_ping``. A connection in steady use is not
    pinged: ``pool_pre_ping`` cost a round trip (``SELECT 1``) every transaction, several
    per event across the services. One that dies mid-use fails its transaction either way
    (the caller's outage handling retries it)."""

    @event.listens_for(engine, "checkin")
    def resting(dbapi_connection: Any, record: Any) -> None:
        record.info["resting_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("resting_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(str(exc)) from exc  # the pool connects afresh
        if not alive:
            raise DisconnectionError("ping failed")


def ensure_database(database_url: str) -> None:
    """Create the database named in the URL if the server does not have it yet."""
    url = make_url(database_url)
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}
            ).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        engine.dispose()


#: The platform's tables in every service's schema (outbox, beat entries), versioned apart
#: from the service's own tables.
SERVICE_TABLES = Path(__file__).resolve().parents[1] / "service_migrations"


def migrate(database_url: str, service_name: str, migrations: Path | None = None) -> None:
    """Create the service's schema, the platform's tables in it, and bring the service's
    own tables to their newest migration (``migrations``: an alembic directory other than
    the one the service declares)."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{service_name}"'))
    finally:
        engine.dispose()
    location = migrations or declaration(service_name).migrations
    if migrations is None:
        _upgrade(database_url, service_name, SERVICE_TABLES, "platform_version")
    if location is not None:
        _upgrade(database_url, service_name, location, "alembic_version")


def _upgrade(database_url: str, schema: str, location: Path, version_table: str) -> None:
    # Imported here: alembic (with mako and pygments) is about 10 MiB a worker process
    # would carry without ever migrating.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(location))
    # A ConfigParser value: '%' (a URL-encoded password, the commas of a multi-host URL)
    # would read as interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["schema"] = schema
    config.attributes["version_table"] = version_table
    command.upgrade(config, "head")
