"""An event's handlers run inside its entry task, each still its own task: its result, its
retries and its dead letter are the handler's, as when each was a message of its own."""

import json
import uuid
from uuid import NAMESPACE_URL, uuid5

import pytest
from sqlalchemy import text

from tests.support import (
    JSON,
    bind_probe,
    drain,
    envelope,
    framed,
    headers,
    publish_raw,
    wait_for,
)


def handler_id(event: dict, task: str) -> str:
    return str(uuid5(NAMESPACE_URL, f"{event['id']}/{task}"))


def result(db, task_id: str):
    with db.connect() as conn:
        return conn.execute(
            text("SELECT status, name, result FROM notifier.celery_taskmeta WHERE task_id = :t"),
            {"t": task_id},
        ).first()


@pytest.fixture
def notifier(clean_queues):
    worker = clean_queues.worker("notifier", ADMIN_EMAILS="ops@example.com").start()
    yield worker
    worker.stop()


def test_a_signup_runs_both_notifier_handlers_without_a_message_per_handler(stack, notifier, db):
    per_handler = bind_probe(stack.amqp_url, "notifier.tasks", exchange="notifier")
    event = envelope(f"inline-{uuid.uuid4().hex[:6]}@example.com")
    publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                application_headers=headers(event), **JSON)  # fmt: skip

    for task in ("notifier.send_welcome_email", "notifier.notify_admins_of_signup"):
        wait_for(lambda t=task: (result(db, handler_id(event, t)) or ["?"])[0] == "SUCCESS")
        assert result(db, handler_id(event, task)).name == task
    assert len(stack.smtp.to(event["payload"]["email"])) == 1
    assert drain(stack.amqp_url, per_handler) == []
    assert f"Task notifier.send_welcome_email[{handler_id(event, 'notifier.send_welcome_email')}]" \
        " succeeded" in notifier.output()  # fmt: skip


def test_a_welcome_email_refused_for_good_dead_letters_the_handlers_own_message_at_once(
    stack, clean_queues, db
):
    failed_probe = bind_probe(stack.amqp_url, "notification.failed")
    event = envelope(f"refused-{uuid.uuid4().hex[:6]}@example.com")
    stack.smtp.refused.add(event["payload"]["email"])
    worker = stack.worker("notifier", ADMIN_EMAILS="").start()
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        [dead] = wait_for(lambda: stack.dead_letters("notifier"), timeout=30)
        [failed] = wait_for(lambda: drain(stack.amqp_url, failed_probe), timeout=30)
    finally:
        worker.stop()

    task_id = handler_id(event, "notifier.send_welcome_email")
    h = dead.headers
    assert (h["task"], h["id"]) == ("notifier.send_welcome_email", task_id)
    assert h["x-task"] == "notifier.send_welcome_email"
    assert h["x-dead-letter-reason"] == "task-failed"
    assert h["x-exception-type"] == "PermanentDeliveryError" and "550" in h["x-exception-message"]
    assert "PermanentDeliveryError" in h["x-traceback"]
    assert h["x-attempts"] == 1
    assert (h["x-original-exchange"], h["x-original-queue"]) == ("notifier", "notifier.tasks")
    args, kwargs, _embed = json.loads(dead.body)
    assert args == [] and kwargs["event"]["id"] == event["id"]
    assert result(db, task_id).status == "FAILURE"  # what `eventful dlq replay` reads
    payload = json.loads(failed.body)[1]["event"]["payload"]
    assert payload["kind"] == "welcome_email" and payload["caused_by"] == event["id"]
    assert stack.dead_letters("notifier") == []  # the event itself was handled, not dead
