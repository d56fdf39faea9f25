"""The walking skeleton's promises, shown on the real broker and database."""

import json
import uuid

import pytest
from sqlalchemy import text

from contracts import UserSignedUp
from tests.support import publish_raw, wait_for


@pytest.fixture
def signup(stack):
    from services.signup.app import service

    return service


@pytest.fixture
def notifier(clean_queues):
    worker = clean_queues.worker("notifier").start()
    yield worker
    worker.stop()


@pytest.fixture
def reports(clean_queues):
    worker = clean_queues.worker("reports").start()
    yield worker
    worker.stop()


def handler_task_id(event_id, task_name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event_id}/{task_name}"))


def scalar(db, sql: str, **params):
    with db.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def test_a_signup_is_handled_once_by_notifier_and_also_reaches_reports(
    stack, signup, notifier, reports, db
):
    from services.signup.signup import sign_up

    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    user_id = sign_up(signup, email=email, name="Ada")

    wait_for(lambda: stack.smtp.to(email), timeout=30)
    event_id = scalar(db, "SELECT event_id FROM reports.facts WHERE subject = :e", e=email)
    wait_for(lambda: scalar(db, "SELECT event_id FROM reports.facts WHERE subject = :e", e=email))
    event_id = scalar(db, "SELECT event_id FROM reports.facts WHERE subject = :e", e=email)

    assert scalar(db, "SELECT count(*) FROM signup.users WHERE id = :u", u=user_id) == 1
    assert scalar(db, "SELECT count(*) FROM notifier.deliveries WHERE recipient = :e", e=email) == 1
    task_id = handler_task_id(event_id, "notifier.send_welcome_email")
    wait_for(
        lambda: (
            scalar(db, "SELECT status FROM notifier.celery_taskmeta WHERE task_id = :t", t=task_id)
            == "SUCCESS"
        )
    )
    assert scalar(
        db, "SELECT name FROM notifier.celery_taskmeta WHERE task_id = :t", t=task_id
    ) == ("notifier.send_welcome_email")
    assert len(stack.smtp.to(email)) == 1


def test_an_event_nobody_subscribes_to_is_kept_in_events_unrouted(stack, clean_queues):
    event_id = str(uuid.uuid4())
    body = json.dumps([[], {"event": {"id": event_id}}, {}]).encode()
    publish_raw(
        stack.amqp_url, "events", "user.deleted", body,
        content_type="application/json", content_encoding="utf-8",
        application_headers={"task": "user.deleted", "id": event_id},
    )  # fmt: skip
    kept = wait_for(
        lambda: __import__("tests.support").support.drain(stack.amqp_url, "events.unrouted")
    )
    assert [m.headers["id"] for m in kept] == [event_id]
    assert kept[0].delivery_info["routing_key"] == "user.deleted"


def test_a_task_that_keeps_failing_ends_in_the_notifier_dlq_with_its_reasons(
    stack, signup, clean_queues, db
):
    from services.signup.signup import sign_up

    closed_port = "9"  # discard: nothing listens, every connection is refused
    # No admins: only the welcome e-mail is sent (and dies), not the admin notice too.
    worker = stack.worker("notifier", SMTP_PORT=closed_port, ADMIN_EMAILS="").start()
    try:
        email = f"bob-{uuid.uuid4().hex[:6]}@example.com"
        sign_up(signup, email=email, name="Bob")
        dead = wait_for(lambda: stack.dead_letters("notifier"), timeout=60)
    finally:
        worker.stop()

    assert len(dead) == 1
    headers = dead[0].headers
    assert headers["x-dead-letter-reason"] == "task-failed"
    assert headers["x-exception-type"] == "ConnectionRefusedError"
    assert "Connection refused" in headers["x-exception-message"]
    assert "ConnectionRefusedError" in headers["x-traceback"]
    assert headers["x-service"] == "notifier"
    assert headers["x-task"] == "notifier.send_welcome_email"
    assert headers["x-attempts"] == 6  # the first try and max_retries=5 retries
    assert headers["x-original-queue"] == "notifier.tasks"
    assert headers["x-original-exchange"] == "notifier"
    args, kwargs, _embed = json.loads(dead[0].body)
    assert args == []
    assert UserSignedUp.model_validate(kwargs["event"]).payload.email == email
    assert stack.smtp.to(email) == []
