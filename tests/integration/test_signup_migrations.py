"""Migration 0003 (e-mail unique whatever its case) on a database that already holds
users whose addresses differ only in case: it refuses, names them, and changes nothing."""

import uuid
from collections.abc import Iterator

import pytest


def alembic(database_url: str, revision: str) -> None:
    """Bring signup's schema to ``revision`` (``shared.core.db.migrate`` always goes to head)."""
    from alembic import command
    from alembic.config import Config

    from services.signup import SERVICE

    config = Config()
    config.set_main_option("script_location", str(SERVICE.migrations))
    config.set_main_option("sqlalchemy.url", database_url)
    config.attributes["schema"] = "signup"
    command.upgrade(config, revision)


@pytest.fixture
def fresh_db(stack) -> Iterator[str]:
    """An empty database beside the session's, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"eventful_mig_{uuid.uuid4().hex[:8]}"
    admin = make_url(stack.database_url).set(drivername="postgresql", database="postgres")
    admin_url = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(stack.database_url).set(database=name)
        yield url.render_as_string(hide_password=False)
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_the_case_insensitive_migration_refuses_existing_duplicates_and_lists_them(fresh_db):
    from sqlalchemy import create_engine, text

    engine = create_engine(fresh_db)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA signup"))
    alembic(fresh_db, "0002")
    ids = [uuid.uuid4() for _ in range(3)]
    insert = "INSERT INTO signup.users (id, email, name, created_at) VALUES (:i, :e, 'A', now())"
    with engine.begin() as conn:
        for i, email in zip(
            ids, ["Ada@example.com", "ada@example.com", "bob@example.com"], strict=True
        ):
            conn.execute(text(insert), {"i": i, "e": email})

    with pytest.raises(RuntimeError) as refused:
        alembic(fresh_db, "head")
    message = str(refused.value)
    assert "1 e-mail address is shared by several users" in message
    assert str(ids[0]) in message and str(ids[1]) in message and str(ids[2]) not in message

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM signup.users WHERE id = :i"), {"i": ids[1]})
    alembic(fresh_db, "head")
    with engine.begin() as conn, pytest.raises(Exception, match="users_email_lower_key"):
        conn.execute(text(insert), {"i": uuid.uuid4(), "e": "ADA@example.com"})
    engine.dispose()
