"""A fourth service joins the system through the public API only (``tests/ledger``): its
own package and a system module naming it; ``shared/`` is not touched. Operators' commands
give it queues, DLX/DLQ, a broker user, a database role, its tables and a worker, and it
handles an event published to ``events``. In a vhost and database of its own."""

import json
import subprocess
import sys
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from contracts import UserSignedUp
from infra.processes import Worker, free_port, wait_for
from infra.scratch import put_scratch_vhost
from shared.core.settings import get_settings
from shared.ops.management import Management
from shared.ops.permissions import CredentialSettings
from tests.support import publish_raw

SYSTEM = "tests.ledger.system"


def ops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "shared.ops", *args], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def recorded(engine: sa.Engine, event_id: uuid.UUID) -> str | None:
    with engine.connect() as conn:
        query = sa.text("SELECT email FROM ledger.entries WHERE event_id = :id")
        return conn.execute(query, {"id": event_id}).scalar()


@pytest.fixture
def system(stack, monkeypatch):
    """This process, and every one it starts, runs the system with the ledger in it."""
    monkeypatch.setenv("EVENTFUL_SYSTEM", SYSTEM)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def isolated(stack, system):
    """A vhost, a database and user/role names of this test's own, removed after it."""
    management = Management(stack.management_url)
    vhost, prefix = f"ledger-{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:6]}-"
    put_scratch_vhost(management, vhost)
    parts = urlsplit(stack.amqp_url.split(";")[0])
    management.grant(vhost, parts.username or "guest")
    database = make_url(stack.database_url).set(database=f"ledger_{uuid.uuid4().hex[:8]}")
    env = {
        **stack.env,
        "EVENTFUL_SYSTEM": SYSTEM,
        "AMQP_URL": urlunsplit(parts._replace(path="/" + quote(vhost, safe=""))),
        "DATABASE_URL": database.render_as_string(hide_password=False),
        "SERVICE_USER_PREFIX": prefix,
    }
    yield env, management, vhost
    admin = make_url(stack.database_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database.database}" WITH (FORCE)')
        for name in ("signup", "notifier", "reports", "ledger"):
            conn.execute(f'DROP ROLE IF EXISTS "{prefix}{name}"')
            if management.user(prefix + name):
                management.delete_user(prefix + name)
    management.delete_vhost(vhost)


def test_a_fourth_service_is_added_without_touching_the_platform(stack, isolated):
    env, management, vhost = isolated

    ops(env, "migrate")
    ops(env, "topology", "apply")
    assert ops(env, "topology", "plan").stdout.strip() == "no drift"
    assert (
        "celery -A tests.ledger.app worker -Q ledger.tasks,ledger.events"
        in ops(env, "workers").stdout
    )

    queues = {q["name"]: q for q in management.collection("queues", vhost)}
    for name in ("ledger.tasks", "ledger.events", "ledger.dlq"):
        assert queues[name]["arguments"]["x-queue-type"] == "quorum"
    assert queues["ledger.events"]["arguments"]["x-dead-letter-exchange"] == "ledger.dlx"
    creds = CredentialSettings(service_user_prefix=env["SERVICE_USER_PREFIX"])
    assert management.user(creds.user("ledger"))

    as_ledger = {
        **env,
        "AMQP_URL": creds.amqp_url("ledger", env["AMQP_URL"]),
        "DATABASE_URL": creds.database_url("ledger", env["DATABASE_URL"]),
        "METRICS_PORT": str(free_port()),
    }
    worker = Worker.as_operators_start_it("ledger", as_ledger, stack.log_dir).start()
    try:
        event = UserSignedUp(
            source="signup",
            payload={"user_id": uuid.uuid4(), "email": "new@example.com", "name": "New"},
        )
        publish_raw(
            env["AMQP_URL"], "events", event.type,
            json.dumps([[], {"event": event.model_dump(mode="json")}, {}]).encode(),
            content_type="application/json", content_encoding="utf-8",
            application_headers={"task": event.type, "id": str(event.id)},
        )  # fmt: skip
        engine = sa.create_engine(as_ledger["DATABASE_URL"])
        try:
            assert wait_for(lambda: recorded(engine, event.id)) == "new@example.com"
        finally:
            engine.dispose()
    finally:
        worker.stop()


def test_a_worker_with_a_fatal_misconfiguration_refuses_to_start(stack):
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.ledger.misconfigured", "worker",
         "--without-gossip", "-l", "INFO"],
        env={**stack.env, "METRICS_PORT": str(free_port())}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "startup check failed" in done.stdout + done.stderr
    assert "ledger.close_books" in done.stdout + done.stderr
