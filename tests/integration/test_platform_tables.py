"""The platform's tables (outbox, beat entries) come from the platform's migrations, in
every service's schema; a database whose services' migrations created them keeps them."""

import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from shared.core.db import ensure_database, migrate
from shared.core.topology import SERVICES

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"


@pytest.fixture
def fresh_database(stack):
    url = make_url(stack.database_url).set(database=f"tables_{uuid.uuid4().hex[:8]}")
    ensure_database(url.render_as_string(hide_password=False))
    engine = sa.create_engine(url)
    yield url.render_as_string(hide_password=False), engine
    engine.dispose()
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def tables(engine: sa.Engine, schema: str) -> set[str]:
    return set(sa.inspect(engine).get_table_names(schema=schema))


def test_every_service_schema_gets_the_platform_tables_from_the_platform(fresh_database):
    url, engine = fresh_database
    for name in SERVICES:
        migrate(url, name)
    for name in SERVICES:
        assert {"outbox", "beat_entries", "platform_version"} <= tables(engine, name), name


def test_a_database_whose_services_created_the_platform_tables_migrates_and_keeps_its_rows(
    fresh_database,
):
    url, engine = fresh_database
    for name in SERVICES:
        migrate(url, name)
    event_id = uuid.uuid4()
    with engine.begin() as conn:
        # As before the platform had migrations: the tables, no platform version.
        conn.execute(sa.text("DROP TABLE signup.platform_version"))
        conn.execute(
            sa.text(
                "INSERT INTO signup.outbox (id, type, body, created_at)"
                " VALUES (:id, 'user.signed_up', '{}', :at)"
            ),
            {"id": event_id, "at": datetime.now(UTC)},
        )
    migrate(url, "signup")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM signup.outbox")).scalar() == event_id
        assert conn.execute(sa.text("SELECT version_num FROM signup.platform_version")).scalar()


def test_no_service_migration_creates_a_platform_table():
    for path in SERVICES_DIR.glob("*/migrations/versions/*.py"):
        text = path.read_text()
        for table in ("outbox", "beat_entries", "dlq_audit"):
            assert f'"{table}"' not in text, f"{path} creates {table}"


def test_a_multi_host_url_migrates_as_any_other(fresh_database):
    """The URL form of a replicated PostgreSQL (docs/deploy/postgresql-ha.md) renders its
    host list with '%2C', which alembic's ConfigParser once read as interpolation."""
    url, engine = fresh_database
    parts = make_url(url)
    multi_host = parts._replace(host=None, port=None).update_query_dict(
        {"host": f"{parts.host},{parts.host}", "port": f"{parts.port or 5432},{parts.port or 5432}",
         "target_session_attrs": "read-write"}
    ).render_as_string(hide_password=False)  # fmt: skip
    assert "%2C" in multi_host
    migrate(multi_host, "signup")
    assert {"outbox", "beat_entries", "platform_version"} <= tables(engine, "signup")
