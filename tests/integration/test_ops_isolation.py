"""One broker user and one database role per service, created by `topology apply`."""

import json
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import amqp
import httpx
import pytest
import sqlalchemy.exc
from kombu import Connection
from kombu.transport.native_delayed_delivery import calculate_routing_key
from sqlalchemy import create_engine, text

from shared.core.topology import EVENTS_EXCHANGE, SERVICES, UNROUTED, ServiceTopology, declare_all
from shared.ops.management import Management
from shared.ops.permissions import DELAYED_DELIVERY, CredentialSettings
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


#: What a service's user might try on what other services' messages wait in or pass
#: through: the shared objects the operator declares, and another service's own.
ATTACKS: dict[str, Callable[[Any, ServiceTopology], Any]] = {
    "delete a delay level": lambda ch, v: ch.queue_delete("celery_delayed_27"),
    "purge a delay level": lambda ch, v: ch.queue_purge("celery_delayed_0"),
    "take a delayed retry": lambda ch, v: ch.basic_get("celery_delayed_0"),
    "unbind a delay level": lambda ch, v: ch.queue_unbind(
        "celery_delayed_27", "celery_delayed_27", "1.#"
    ),
    "delete a delay exchange": lambda ch, v: ch.exchange_delete("celery_delayed_13"),
    "delete the delayed delivery exchange": lambda ch, v: ch.exchange_delete(DELAYED_DELIVERY),
    "unbind another service from delayed delivery": lambda ch, v: ch.exchange_unbind(
        v.name, DELAYED_DELIVERY, f"#.{v.tasks_queue}"
    ),
    "unbind events from delayed delivery": lambda ch, v: ch.exchange_unbind(
        EVENTS_EXCHANGE, DELAYED_DELIVERY, "#.user.signed_up"
    ),
    "delete events": lambda ch, v: ch.exchange_delete(EVENTS_EXCHANGE),
    "delete the unrouted exchange": lambda ch, v: ch.exchange_delete(UNROUTED),
    "delete the unrouted queue": lambda ch, v: ch.queue_delete(UNROUTED),
    "purge the unrouted queue": lambda ch, v: ch.queue_purge(UNROUTED),
    "take an unrouted event": lambda ch, v: ch.basic_get(UNROUTED),
    "delete another's DLQ": lambda ch, v: ch.queue_delete(v.dlq),
    "purge another's DLQ": lambda ch, v: ch.queue_purge(v.dlq),
    "delete another's DLX": lambda ch, v: ch.exchange_delete(v.dlx),
    "delete another's work queue": lambda ch, v: ch.queue_delete(v.tasks_queue),
    "purge another's work queue": lambda ch, v: ch.queue_purge(v.tasks_queue),
    "unbind another's work queue": lambda ch, v: ch.queue_unbind(
        v.tasks_queue, v.name, v.tasks_queue
    ),
    "delete another's exchange": lambda ch, v: ch.exchange_delete(v.name),
    "delete another's control exchange": lambda ch, v: ch.exchange_delete(f"{v.name}.pidbox"),
    "delete another's control replies": lambda ch, v: ch.exchange_delete(f"reply.{v.name}.pidbox"),
    "delete another's event exchange": lambda ch, v: ch.exchange_delete(f"{v.name}.celeryev"),
}


def refused(stack, creds, attacker: str, attack: Callable[[Any, ServiceTopology], Any]) -> bool:
    """Whether the broker refuses ``attack`` from ``attacker``'s user, on another service."""
    victim = next(t for t in SERVICES.values() if t.name != attacker)
    with as_service(stack, creds, attacker) as conn:
        try:
            attack(conn.channel(), victim)
        except amqp.exceptions.AccessRefused:
            return True
    return False


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_service_may_destroy_or_take_what_other_services_wait_on(stack, creds, attack):
    """Every service's pending retries wait in the shared ``celery_delayed_*`` levels, every
    unsubscribed event in ``events.unrouted``: no service user may delete, purge, read or
    unbind them, nor another service's queues and exchanges (``ACCESS_REFUSED``)."""
    try:
        allowed = [s for s in SERVICES if not refused(stack, creds, s, ATTACKS[attack])]
    finally:
        with Connection(stack.amqp_url) as conn:
            declare_all(conn)  # whatever an attack took down, back for the next test
    assert allowed == [], f"{attack}: allowed to {allowed}"


def as_worker(stack, creds, service: str, **env: str):
    return stack.worker(
        service,
        AMQP_URL=creds.amqp_url(service, stack.amqp_url),
        DATABASE_URL=creds.database_url(service, stack.database_url),
        **env,
    )


def test_a_restricted_notifiers_countdown_retries_are_delivered(stack, creds, clean_queues, db):
    """``self.retry(countdown=...)`` (autoretry here) from a worker whose user may not
    configure the delay levels: the retries travel them and the e-mail is sent once."""
    from tests.integration.test_notifier_email import delivery, publish_event, signup_payload

    worker = as_worker(stack, creds, "notifier", ADMIN_EMAILS="").start()
    email, event_id = f"lvl-{uuid.uuid4().hex[:6]}@example.com", str(uuid.uuid4())
    stack.smtp.busy = 2  # "421 busy" twice: two countdown retries
    try:
        publish_event(stack, "user.signed_up", event_id, signup_payload(email))
        wait_for(lambda: stack.smtp.to(email), timeout=60)
        wait_for(lambda: delivery(db, f"{event_id}/welcome_email").status == "sent")
    finally:
        stack.smtp.busy = 0
        worker.stop()
    assert len(stack.smtp.to(email)) == 1
    assert delivery(db, f"{event_id}/welcome_email").attempts == 3
    assert "ACCESS_REFUSED" not in worker.output()
    assert "delayed delivery" not in worker.output().lower(), worker.output()[-3000:]


def delayed_bindings(stack, topo: ServiceTopology) -> set[str]:
    """Routing keys that bind ``topo``'s exchange to ``celery_delayed_delivery``."""
    path = f"/exchanges/{Management.q(stack.vhost)}/{DELAYED_DELIVERY}/bindings/source"
    answer = Management(stack.management_url).request("GET", path)
    return {b["routing_key"] for b in answer if b["destination"] == topo.name}


def publish_delayed(conn: Connection, countdown: int, routing_key: str) -> None:
    """What Celery publishes for a countdown: to the top level, the delay in the key."""
    channel = conn.channel()
    channel.confirm_select()
    channel.basic_publish_confirm(
        amqp.Message(b"{}", content_type="application/json"),
        exchange="celery_delayed_27",
        routing_key=calculate_routing_key(countdown, routing_key),
    )


@pytest.mark.parametrize("name", SERVICES)
def test_each_restricted_worker_binds_its_queues_so_countdowns_reach_them(
    stack, creds, clean_queues, name
):
    """A queue recreated since the last ``topology apply`` is bound to delayed delivery
    again by its own worker, with no configure right on the shared levels; a countdown
    of 3 s published as the service waits in two levels and reaches its queue."""
    topo = SERVICES[name]
    with Connection(stack.amqp_url) as conn:
        conn.channel().exchange_unbind(name, DELAYED_DELIVERY, f"#.{topo.tasks_queue}")
    assert f"#.{topo.tasks_queue}" not in delayed_bindings(stack, topo)
    worker = as_worker(stack, creds, name).start()
    worker.stop()
    assert f"#.{topo.tasks_queue}" in delayed_bindings(stack, topo), worker.output()[-3000:]
    with as_service(stack, creds, name) as conn:
        publish_delayed(conn, 3, topo.tasks_queue)
    assert drain(stack.amqp_url, topo.tasks_queue) == []  # still waiting
    arrived = wait_for(lambda: drain(stack.amqp_url, topo.tasks_queue), timeout=30)
    assert arrived[0].delivery_info["exchange"] == DELAYED_DELIVERY


def test_a_long_countdown_from_a_service_waits_in_the_top_delay_level(stack, creds):
    """Four years and a bit (2**27 s + 1): the message waits in ``celery_delayed_27``."""
    with as_service(stack, creds, "reports") as conn:
        publish_delayed(conn, 2**27 + 1, "reports.tasks")
    with Connection(stack.amqp_url) as conn:
        channel = conn.channel()
        try:
            waiting = wait_for(lambda: channel.queue_declare("celery_delayed_27", passive=True))
            assert waiting.message_count == 1
        finally:
            channel.queue_purge("celery_delayed_27")


def test_a_worker_refuses_to_start_without_the_operators_shared_objects(stack, creds):
    """Missing shared objects are the operator's to declare: the worker says so and exits,
    rather than running without delayed retries or looping on a refused declare."""
    with Connection(stack.amqp_url) as conn:
        conn.channel().exchange_delete(DELAYED_DELIVERY)
    worker = as_worker(stack, creds, "notifier")
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            worker.start()
    finally:
        worker.stop()
        with Connection(stack.amqp_url) as conn:
            declare_all(conn)
    assert "celery_delayed_delivery" in worker.output()
    assert "eventful topology apply" in worker.output()
