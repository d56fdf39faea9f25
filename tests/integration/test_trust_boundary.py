"""A publisher cannot act with the receiver's authority: what a message asks of the worker
beyond its task and arguments (follow-up work in the embed or in headers, Celery's control
headers, the platform's own ``x-`` headers, protocol 1) counts only from the service itself.

Every actor has its own broker user: the workers run as notifier and reports (as ``topology
apply`` creates them), the attacks come from signup's user (another service) and from an
upstream made with ``eventful upstream add crm --publishes user.signed_up``.
"""

import json
import uuid
from datetime import date

import pytest
from sqlalchemy import text

from shared.core.db import migrate
from shared.core.topology import SERVICES
from shared.ops.commands.common import OPS_MIGRATIONS
from shared.ops.dlq import depth
from tests.service_users import ops_as
from tests.support import JSON, envelope, framed, publish_raw, wait_for

MALLORY = "mallory@evil.example"


@pytest.fixture(scope="module")
def workers(stack, creds):
    """notifier and reports, each as its own broker user."""
    started = {
        name: stack.worker(
            name,
            AMQP_URL=creds.amqp_url(name, stack.amqp_url),
            DATABASE_URL=creds.database_url(name, stack.database_url),
        )
        for name in ("notifier", "reports")
    }
    try:  # each stopped, whichever start fails
        for worker in started.values():
            worker.start()
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def as_signup(stack, creds, exchange: str, routing_key: str, body: bytes, headers: dict,
              **props) -> None:  # fmt: skip
    """Publish with signup's credentials and its broker-validated ``user_id``."""
    publish_raw(creds.amqp_url("signup", stack.amqp_url), exchange, routing_key, body,
                application_headers=headers, user_id=creds.user("signup"),
                **{**JSON, **props})  # fmt: skip


def send_email(to: str) -> dict:
    """A Celery signature of ``notifier.send_email``: what an attacker embeds."""
    kwargs = {"to": to, "subject": "pwned", "body": "the attacker's words"}
    return {"task": "notifier.send_email", "args": [], "kwargs": kwargs, "options": {},
            "subtask_type": None, "immutable": True}  # fmt: skip


def reasons(stack, service: str, expected: int, timeout: float = 30) -> dict[str, str]:
    """``id`` -> ``x-dead-letter-reason`` of the service's dead letters, once ``expected``
    of them are there."""
    found: dict[str, str] = {}
    wait_for(lambda: found.update({m.headers.get("id"): m.headers.get("x-dead-letter-reason")
                                   for m in stack.dead_letters(service)})
             or len(found) >= expected, timeout=timeout)  # fmt: skip
    return found


def test_an_upstreams_event_carrying_follow_up_work_sends_no_email_of_its_choosing(
    stack, creds, workers, upstream, clean_queues
):
    event = envelope(f"victim-{uuid.uuid4().hex[:6]}@example.com")
    embed = {"callbacks": [send_email(MALLORY)], "chain": [send_email(MALLORY)]}
    body = json.dumps([[], {"event": event}, embed]).encode()
    headers = {"task": "user.signed_up", "id": event["id"]}
    publish_raw(upstream, "events", "user.signed_up", body, application_headers=headers, **JSON)
    for service in ("notifier", "reports"):
        assert reasons(stack, service, 1) == {event["id"]: "not-allowed"}
    assert stack.smtp.to(MALLORY) == []


@pytest.mark.parametrize("name", ["callbacks", "chain", "errbacks", "chord"])
def test_follow_up_work_named_in_a_header_is_refused(
    stack, creds, workers, upstream, clean_queues, name
):
    event = envelope(f"victim-{uuid.uuid4().hex[:6]}@example.com")
    work = send_email(MALLORY) if name == "chord" else [send_email(MALLORY)]
    headers = {"task": "user.signed_up", "id": event["id"], name: work}
    publish_raw(upstream, "events", "user.signed_up", framed(event),
                application_headers=headers, **JSON)  # fmt: skip
    assert reasons(stack, "notifier", 1) == {event["id"]: "not-allowed"}
    assert stack.smtp.to(MALLORY) == []


@pytest.mark.parametrize(
    ("timelimit", "reason"),
    [([-1, -1], "malformed-headers"), ([1e12, 1e12], "malformed-headers"),
     ([5, 10], "malformed-headers"), ([30, 20], "not-allowed"), ([0, None], "malformed-headers")],
)  # fmt: skip
def test_time_limits_are_range_checked_for_everyone_and_obeyed_only_from_the_service(
    stack, creds, workers, upstream, clean_queues, timelimit, reason
):
    """``[-1, -1]`` from a publish-only upstream SIGKILLed both subscribers' pool processes."""
    event = envelope(f"limits-{uuid.uuid4().hex[:6]}@example.com")
    headers = {"task": "user.signed_up", "id": event["id"], "timelimit": timelimit}
    publish_raw(upstream, "events", "user.signed_up", framed(event),
                application_headers=headers, **JSON)  # fmt: skip
    for service in ("notifier", "reports"):
        assert reasons(stack, service, 1) == {event["id"]: reason}
    for name, worker in workers.items():
        assert "Hard time limit" not in worker.output(), name


def test_a_forged_accepted_delivery_header_cannot_suppress_a_commanded_email(
    stack, creds, workers, clean_queues
):
    """``x-accepted-delivery`` tells the notifier the provider already took the e-mail
    (its retry after a database outage): forged by another service, no e-mail would go."""
    task_id, to = str(uuid.uuid4()), f"cmd-{uuid.uuid4().hex[:6]}@example.com"
    kwargs = {"to": to, "subject": "Hi", "body": "b"}
    headers = {"task": "notifier.send_email", "id": task_id,
               "x-accepted-delivery": f"{task_id}/email", "x-outage-waited": 10**6}  # fmt: skip
    as_signup(stack, creds, "notifier", "notifier.tasks", json.dumps([[], kwargs, {}]).encode(),
              headers)  # fmt: skip
    wait_for(lambda: stack.smtp.to(to), timeout=30)
    assert stack.dead_letters("notifier") == []


@pytest.mark.parametrize(
    ("header", "value"),
    [("retries", 1000), ("group", "g-1"), ("group_index", 0),
     ("shadow", "notifier.send_welcome_email"), ("timelimit", [30, 20]),
     ("replaced_task_nesting", 3), ("is_eager", True), ("headers", {"x-outage-waited": 1})],
)  # fmt: skip
def test_control_headers_from_another_service_are_refused_naming_the_header(
    stack, creds, workers, clean_queues, header, value
):
    task_id, to = str(uuid.uuid4()), f"cmd-{uuid.uuid4().hex[:6]}@example.com"
    kwargs = {"to": to, "subject": "Hi", "body": "b"}
    as_signup(stack, creds, "notifier", "notifier.tasks", json.dumps([[], kwargs, {}]).encode(),
              {"task": "notifier.send_email", "id": task_id, header: value})  # fmt: skip
    letters = wait_for(lambda: stack.dead_letters("notifier"), timeout=30)
    assert [m.headers["x-dead-letter-reason"] for m in letters] == ["not-allowed"]
    assert repr(header) in letters[0].headers["x-exception-message"]
    assert stack.smtp.to(to) == []


def test_protocol_1_from_another_service_is_refused(stack, creds, workers, db, clean_queues):
    """No ``task`` header and a JSON body naming a task: Celery's protocol 1 path, which
    none of the platform's checks saw (it ran ``reports.render`` for notifier)."""
    task_id = str(uuid.uuid4())
    document = {"kind": "daily", "day": "2031-01-01", "summary": {}, "shards": []}
    body = {"task": "reports.render", "id": task_id, "args": [document], "kwargs": {}}
    publish_raw(creds.amqp_url("notifier", stack.amqp_url), "reports", "reports.tasks",
                json.dumps(body).encode(), application_headers={},
                user_id=creds.user("notifier"), **JSON)  # fmt: skip
    letters = wait_for(lambda: stack.dead_letters("reports"), timeout=30)
    assert [m.headers["x-dead-letter-reason"] for m in letters] == ["protocol-1"]
    with db.connect() as conn:
        query = text("SELECT count(*) FROM reports.celery_taskmeta WHERE task_id = :t")
        assert conn.execute(query, {"t": task_id}).scalar() == 0


def test_a_service_s_own_workflows_keep_their_embed(stack, creds, workers, db, clean_queues):
    """GenerateReport from another service: the chord and chain it starts are reports' own."""
    from contracts import GenerateReport

    command = GenerateReport(kind="daily", day=date(2031, 2, 4)).model_dump(mode="json")
    task_id = str(uuid.uuid4())
    as_signup(stack, creds, "reports", "reports.tasks", json.dumps([[], command, {}]).encode(),
              {"task": GenerateReport.task, "id": task_id})  # fmt: skip
    with db.connect() as conn:
        query = text("SELECT status FROM reports.celery_taskmeta WHERE task_id = :t")
        wait_for(lambda: conn.execute(query, {"t": task_id}).scalar() == "SUCCESS", timeout=60)
    assert stack.dead_letters("reports") == []


def test_a_refused_message_is_not_laundered_by_a_replay(stack, creds, workers, upstream, db,
                                                        clean_queues):  # fmt: skip
    """An upstream's message naming ``notifier.send_email`` on the events route: refused,
    skipped by a routine replay, and judged as the upstream's again when named."""
    migrate(stack.database_url, "ops", OPS_MIGRATIONS)
    task_id = str(uuid.uuid4())
    kwargs = {"to": MALLORY, "subject": "pwned", "body": "b"}
    headers = {"task": "notifier.send_email", "id": task_id}
    body = json.dumps([[], kwargs, {}]).encode()
    publish_raw(upstream, "events", "user.signed_up", body, application_headers=headers, **JSON)
    wait_for(lambda: depth(stack.amqp_url, SERVICES["notifier"]) == 1, timeout=30)
    routine = ops_as(stack, creds, "dlq", "replay", "notifier", "--id", task_id)
    assert "replayed 0 of 1" in routine.stdout and "not-allowed" in routine.stdout
    named = ops_as(stack, creds, "dlq", "replay", "notifier", "--id", task_id, "--include-refused")
    assert "replayed 1 of 1" in named.stdout
    letters = wait_for(lambda: stack.dead_letters("notifier"), timeout=30)
    assert [m.headers["x-dead-letter-reason"] for m in letters] == ["not-allowed"]
    # The upstream put no user_id on it: nobody vouched for the sender, then or now.
    assert letters[0].headers["x-original-user-id"] == ""
    assert stack.smtp.to(MALLORY) == []
    with db.connect() as conn:
        audit = conn.execute(
            text("SELECT operator, reason FROM ops.dlq_audit WHERE task_id = :t"), {"t": task_id}
        ).one()
    assert audit.reason == "not-allowed" and audit.operator


def test_what_another_services_celery_app_sends_by_default_still_runs(
    stack, creds, workers, clean_queues
):
    """``send_task`` from a plain Celery app with signup's credentials: every default header
    (``retries`` 0, ``timelimit`` [None, None], ``stamps`` {}, ...), with and without an eta."""
    from celery import Celery

    app = Celery("elsewhere", broker=creds.amqp_url("signup", stack.amqp_url))
    sent = [f"celery-{uuid.uuid4().hex[:6]}@example.com" for _ in range(2)]
    with app.connection_for_write() as conn:
        for countdown, to in zip((None, 2), sent, strict=True):
            app.send_task("notifier.send_email", kwargs={"to": to, "subject": "s", "body": "b"},
                          exchange="notifier", routing_key="notifier.tasks", countdown=countdown,
                          connection=conn, declare=[])  # fmt: skip
    for to in sent:
        wait_for(lambda to=to: stack.smtp.to(to), timeout=30)
    assert stack.dead_letters("notifier") == []
