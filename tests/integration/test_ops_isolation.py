"""One broker user and one database role per service, created by `topology apply`."""

import json
import subprocess
import uuid

import amqp
import httpx
import pytest
import sqlalchemy.exc
from kombu import Connection
from sqlalchemy import create_engine, text

from shared.permissions import CredentialSettings
from tests.service_users import make_run
from tests.support import drain, wait_for


def as_service(stack, creds: CredentialSettings, name: str) -> Connection:
    return Connection(creds.amqp_url(name, stack.amqp_url))


def test_notifier_credentials_cannot_consume_from_the_signup_queue(stack, creds):
    with as_service(stack, creds, "notifier") as conn:
        channel = conn.channel()
        with pytest.raises(amqp.exceptions.AccessRefused, match="signup.tasks"):
            channel.basic_consume("signup.tasks", callback=lambda m: None)
    with as_service(stack, creds, "notifier") as conn:
        conn.channel().basic_consume("notifier.tasks", callback=lambda m: None)  # its own: fine


def publish_event(conn: Connection, event_type: str) -> None:
    channel = conn.channel()
    channel.confirm_select()
    body = json.dumps([[], {"event": {"id": str(uuid.uuid4())}}, {}])
    channel.basic_publish_confirm(
        amqp.Message(body, content_type="application/json", application_headers={"task": "x"}),
        exchange="events",
        routing_key=event_type,
    )


def test_notifier_credentials_cannot_publish_report_generated(stack, creds, clean_queues):
    refused = pytest.raises(amqp.exceptions.AccessRefused, match="report.generated")
    with as_service(stack, creds, "notifier") as conn, refused:
        publish_event(conn, "report.generated")
    with as_service(stack, creds, "notifier") as conn:
        publish_event(conn, "notification.sent")  # its own event type: accepted and routed
    assert len(wait_for(lambda: drain(stack.amqp_url, "reports.events"))) == 1


def test_a_service_cannot_bind_to_events_it_does_not_subscribe_to(stack, creds):
    refused = pytest.raises(amqp.exceptions.AccessRefused, match="notification.sent")
    with as_service(stack, creds, "notifier") as conn, refused:
        conn.channel().queue_bind("notifier.events", "events", routing_key="notification.sent")
    with as_service(stack, creds, "notifier") as conn:
        conn.channel().queue_bind("notifier.events", "events", routing_key="user.signed_up")


def test_a_reports_worker_runs_with_only_the_reports_user_and_role(stack, creds, clean_queues):
    from services.signup.app import service as signup
    from services.signup.signup import sign_up

    worker = stack.worker(
        "reports",
        AMQP_URL=creds.amqp_url("reports", stack.amqp_url),
        DATABASE_URL=creds.database_url("reports", stack.database_url),
    ).start()
    try:
        email = f"iso-{uuid.uuid4().hex[:6]}@example.com"
        sign_up(signup, email=email, name="Iso")
        engine = create_engine(stack.database_url)
        query = text("SELECT count(*) FROM reports.facts WHERE subject = :e")
        with engine.connect() as db:
            wait_for(lambda: db.execute(query, {"e": email}).scalar() == 1, timeout=30)
        engine.dispose()
    finally:
        worker.stop()
    assert "ACCESS_REFUSED" not in worker.output()


def test_a_service_role_owns_its_schema_and_cannot_read_another(stack, creds):
    engine = create_engine(creds.database_url("notifier", stack.database_url))
    try:
        with engine.connect() as db:
            db.execute(text("SELECT count(*) FROM notifier.deliveries"))
            owner = db.execute(
                text("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'notifier'")
            ).scalar()
            assert owner.strip('"') == creds.user("notifier")
        with (
            engine.connect() as db,
            pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"),
        ):
            db.execute(text("SELECT count(*) FROM signup.users"))
    finally:
        engine.dispose()


def test_make_run_serves_a_signup_as_per_service_users_and_stops_everything_on_ctrl_c(
    stack, creds, tmp_path
):
    with make_run(stack, creds, tmp_path) as run:
        ports, output = run.ports, run.output
        email = f"run-{uuid.uuid4().hex[:6]}@example.com"
        response = httpx.post(
            f"http://127.0.0.1:{ports['api']}/users/signup",
            json={"email": email, "name": "Run", "phone": "+821012345678"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        wait_for(lambda: any(f"mail to {email}" in line for line in output), timeout=60)
        metrics = httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5).text
        assert "# TYPE eventful_outbox_unpublished gauge" in metrics
    assert output[-1].strip() == "stopped"
    leftovers = subprocess.run(
        ["pgrep", "-f", f"--port={ports['flower']}|--port {ports['smtp']}"], capture_output=True
    )
    assert leftovers.stdout == b""
    for log in tmp_path.glob("*-worker.log"):
        assert "ACCESS_REFUSED" not in log.read_text(errors="replace"), log.name


def test_what_stays_open_any_service_may_delete_the_shared_delay_queues_and_purge_unrouted(
    stack, creds
):
    """Not closed (README, Isolation): every worker declares ``events``, ``events.unrouted``
    and Celery's 28 ``celery_delayed_*`` levels at start, so every service user may
    configure them. When this test fails, the gap is closed: update the README."""
    from shared.topology import declare_all

    try:
        with as_service(stack, creds, "notifier") as conn:
            channel = conn.channel()
            channel.queue_delete("celery_delayed_27")  # any service's pending long retries
            channel.queue_purge("events.unrouted")
    finally:
        with Connection(stack.amqp_url) as conn:
            declare_all(conn)
