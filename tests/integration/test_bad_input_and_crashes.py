"""Bad input is dead-lettered with its reason; a crashed worker loses nothing."""

import pickle
import uuid

import pytest
from sqlalchemy import create_engine, text

from shared.worker.allowed import broker_user
from tests.support import JSON, envelope, framed, publish_raw, wait_for


def bad_messages() -> dict[str, tuple[bytes, dict, str]]:
    """Per case: body, properties, the reason the DLQ must show."""
    event = envelope("valid@example.com")
    invalid_payload = envelope("not-an-address")
    return {
        "invalid-json": (b"{not json", {**JSON, "task": "user.signed_up"}, "undecodable-body"),
        "pickle": (
            pickle.dumps([[], {"event": event}, {}]),
            {"content_type": "application/x-python-serialize", "content_encoding": "binary",
             "task": "user.signed_up"},
            "content-type-not-allowed",
        ),
        "unknown-task": (framed(event), {**JSON, "task": "user.exploded"}, "unknown-task"),
        "no-task-header": (framed(event), {**JSON}, "no-task-header"),
        "schema-invalid": (framed(invalid_payload), {**JSON, "task": "user.signed_up"},
                           "rejected"),
    }  # fmt: skip


def test_malformed_raw_messages_end_in_the_dlq_and_the_worker_keeps_consuming(clean_queues):
    stack = clean_queues
    worker = stack.worker("notifier").start()
    try:
        sent = {}
        for case, (body, props, _reason) in bad_messages().items():
            message_id = f"{case}-{uuid.uuid4()}"
            headers = {"id": message_id}
            if "task" in props:
                headers["task"] = props.pop("task")
            # As the operator (a user the worker trusts): past the origin check, each case
            # meets the check it is about.
            publish_raw(stack.amqp_url, "", "notifier.events", body,
                        application_headers=headers, user_id=broker_user(stack.amqp_url),
                        **props)  # fmt: skip
            sent[message_id] = body
        good = f"good-{uuid.uuid4().hex[:6]}@example.com"
        event = envelope(good)
        headers = {"task": "user.signed_up", "id": event["id"]}
        publish_raw(
            stack.amqp_url, "events", "user.signed_up", framed(event),
            application_headers=headers, **JSON,
        )  # fmt: skip

        wait_for(lambda: stack.smtp.to(good), timeout=30)
        dead = {}
        wait_for(lambda: dead.update({m.headers["id"]: m for m in stack.dead_letters("notifier")})
                 or len(dead) == len(sent), timeout=30)  # fmt: skip
        assert worker.proc.poll() is None, "the worker must survive bad input"
    finally:
        worker.stop()

    assert set(dead) == set(sent)
    for message_id, message in dead.items():
        case = message_id.rsplit("-", 5)[0]
        body = message.body if isinstance(message.body, bytes) else message.body.encode()
        assert body == sent[message_id], f"{case}: body must arrive intact"
        assert message.headers["x-dead-letter-reason"] == bad_messages()[case][2], case
        assert message.headers["x-service"] == "notifier"
        assert message.headers["x-original-queue"] == "notifier.events"
        assert message.headers["x-exception-message"], case
    assert (
        "InvalidMessage"
        in dead[next(k for k in dead if k.startswith("schema"))].headers["x-exception-type"]
    )
    assert len(stack.smtp.to(good)) == 1


@pytest.mark.slow
def test_a_worker_killed_mid_task_runs_the_task_again_after_restart(stack, clean_queues):
    from services.signup.app import service
    from services.signup.signup import sign_up

    email = f"kill-{uuid.uuid4().hex[:6]}@example.com"
    worker = stack.worker("notifier").start()
    stack.smtp.delay = 5.0
    try:
        sign_up(service, email=email, name="Kim")
        wait_for(lambda: stack.smtp.receiving, timeout=30)  # the task is inside its SMTP call
        worker.kill()
        stack.smtp.delay = 0.0
        wait_for(lambda: stack.smtp.receiving == 0, timeout=10)
        assert stack.smtp.to(email) == [], "the killed attempt must not have delivered"

        worker = stack.worker("notifier").start()
        wait_for(lambda: stack.smtp.to(email), timeout=60)
        # the sink has the mail before the worker commits "sent": wait for the record too
        wait_for(lambda: delivery_status(stack, email) == "sent", timeout=30)
    finally:
        stack.smtp.delay = 0.0
        worker.stop()
    assert len(stack.smtp.to(email)) == 1


def delivery_status(stack, email: str) -> str | None:
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT status FROM notifier.deliveries WHERE recipient = :e"), {"e": email}
            ).scalar_one_or_none()
    finally:
        engine.dispose()
