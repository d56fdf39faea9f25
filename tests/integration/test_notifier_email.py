"""The notifier's e-mail promises, on the real broker, database, SMTP sink and workers."""

import json
import re
import uuid

import pytest
from sqlalchemy import text

from infra.smtp_sink import SmtpSink
from tests.support import JSON, bind_probe, drain, free_port, publish_raw, send_raw, wait_for

CLOSED_PORT = "9"  # discard: nothing listens, every connection is refused


@pytest.fixture
def admin():
    return f"admin-{uuid.uuid4().hex[:6]}@example.com"


@pytest.fixture
def notifier(clean_queues, admin):
    """A notifier worker with its own admin address; tests that need other settings start
    their own worker instead (two workers would share the queue)."""
    worker = clean_queues.worker("notifier", ADMIN_EMAILS=admin).start()
    yield worker
    worker.stop()


def publish_event(stack, event_type: str, event_id: str, payload: dict) -> None:
    """The documented wire format, as an upstream publisher that is not Celery would."""
    envelope = {
        "id": event_id, "type": event_type, "version": 1,
        "occurred_at": "2026-11-25T00:00:00Z", "source": "upstream", "payload": payload,
    }  # fmt: skip
    publish_raw(
        stack.amqp_url, "events", event_type, json.dumps([[], {"event": envelope}, {}]).encode(),
        application_headers={"task": event_type, "id": event_id}, **JSON,
    )  # fmt: skip


def signup_payload(email: str) -> dict:
    return {"user_id": str(uuid.uuid4()), "email": email, "name": "Ada"}


def send_email(stack, to: str, task_id: str | None = None, **fields) -> str:
    task_id = task_id or str(uuid.uuid4())
    command = {"to": to, "subject": "Hello", "body": "A message.", **fields}
    send_raw(stack.amqp_url, "notifier.send_email", command, task_id)
    return task_id


def delivery(db, key: str):
    with db.connect() as conn:
        return conn.execute(
            text("SELECT status, attempts, error FROM notifier.deliveries WHERE id = :k"),
            {"k": key},
        ).first()


def retry_delays(log: str, task: str) -> list[int]:
    """The countdowns Celery logged for ``task`` ("... retry: Retry in 2s: ...")."""
    return [int(s) for s in re.findall(rf"{re.escape(task)}\[[^]]+\] retry: Retry in (\d+)s", log)]


def test_a_welcome_email_and_the_admin_notice_arrive_once_when_the_event_is_delivered_three_times(
    stack, notifier, admin, db
):
    sent_probe = bind_probe(stack.amqp_url, "notification.sent")
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    event_id = str(uuid.uuid4())
    payload = signup_payload(email)
    for _ in range(3):
        publish_event(stack, "user.signed_up", event_id, payload)

    # Each of the 3 copies runs both handlers, and each run announces notification.sent
    # (the duplicates re-announce the same event id): 6 announcements = all copies handled.
    announced = []
    wait_for(lambda: announced.extend(drain(stack.amqp_url, sent_probe)) or len(announced) >= 6)
    assert len(stack.smtp.to(email)) == 1
    notices = [m for m in stack.smtp.to(admin) if f"New signup: {email}" in m["data"]]
    assert len(notices) == 1 and payload["user_id"] in notices[0]["data"]
    announcements = [json.loads(m.body)[1]["event"] for m in announced]
    assert len({a["id"] for a in announcements}) == 2
    assert {a["payload"]["kind"] for a in announcements} == {"welcome_email", "admin_signup_notice"}
    assert all(a["payload"]["caused_by"] == event_id for a in announcements)
    assert delivery(db, f"{event_id}/welcome_email").status == "sent"
    assert delivery(db, f"{event_id}/admin_signup_notice").status == "sent"


def test_with_smtp_down_for_a_while_the_welcome_email_retries_with_growing_delays_across_a_restart(
    stack, clean_queues
):
    task = "notifier.send_welcome_email"
    port = free_port()  # the sink comes up here only later
    env = {"SMTP_PORT": str(port), "RETRY_DELAY_SCALE": "0.25", "ADMIN_EMAILS": ""}
    email = f"late-{uuid.uuid4().hex[:6]}@example.com"
    first = stack.worker("notifier", **env).start()
    second, sink = None, None
    try:
        publish_event(stack, "user.signed_up", str(uuid.uuid4()), signup_payload(email))
        wait_for(lambda: len(retry_delays(first.output(), task)) >= 2, timeout=60)
        first.kill()

        second = stack.worker("notifier", **env).start()
        wait_for(lambda: retry_delays(second.output(), task), timeout=60)
        sink = SmtpSink(port=port).start()
        wait_for(lambda: sink.to(email), timeout=60)
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
        if sink is not None:
            sink.stop()

    delays = retry_delays(first.output(), task) + retry_delays(second.output(), task)
    assert delays == sorted(delays) and delays[-1] > delays[0], delays
    assert len(sink.to(email)) == 1


def test_an_smtp_server_busy_at_the_greeting_gets_the_welcome_email_retried_and_delivered_once(
    stack, clean_queues, db
):
    worker = stack.worker("notifier", ADMIN_EMAILS="").start()  # only the welcome connects
    email = f"busy-{uuid.uuid4().hex[:6]}@example.com"
    event_id = str(uuid.uuid4())
    stack.smtp.busy = 2  # "421 busy" to the first two connections
    try:
        publish_event(stack, "user.signed_up", event_id, signup_payload(email))
        wait_for(lambda: stack.smtp.to(email), timeout=60)
        wait_for(lambda: delivery(db, f"{event_id}/welcome_email").status == "sent")
    finally:
        stack.smtp.busy = 0
        worker.stop()

    assert len(stack.smtp.to(email)) == 1
    assert stack.dead_letters("notifier") == []
    row = delivery(db, f"{event_id}/welcome_email")
    assert row.attempts == 3 and "421" in row.error
    assert len(re.findall(r"notifier.send_welcome_email\[[^]]+\] retry:", worker.output())) == 2


def test_with_smtp_down_for_good_an_email_ends_in_the_dlq_after_max_retries_and_is_reported_failed(
    stack, clean_queues, db
):
    failed_probe = bind_probe(stack.amqp_url, "notification.failed")
    worker = stack.worker("notifier", SMTP_PORT=CLOSED_PORT).start()
    try:
        task_id = send_email(stack, "nobody-home@example.com")
        dead = wait_for(lambda: stack.dead_letters("notifier"), timeout=60)
        failed = wait_for(lambda: drain(stack.amqp_url, failed_probe), timeout=30)
    finally:
        worker.stop()

    assert len(dead) == 1
    headers = dead[0].headers
    assert headers["x-task"] == "notifier.send_email" and headers["id"] == task_id
    assert headers["x-dead-letter-reason"] == "task-failed"
    assert headers["x-exception-type"] == "ConnectionRefusedError"
    assert headers["x-attempts"] == 6  # the first try and max_retries=5 retries
    [event] = [json.loads(m.body)[1]["event"] for m in failed]
    assert event["payload"]["delivery_id"] == f"{task_id}/email"
    assert "ConnectionRefusedError" in event["payload"]["error"]
    row = delivery(db, f"{task_id}/email")
    assert (row.status, row.attempts) == ("failed", 6)


def test_a_refused_address_goes_to_the_dlq_at_once_without_retries(stack, notifier, db):
    failed_probe = bind_probe(stack.amqp_url, "notification.failed")
    address = f"gone-{uuid.uuid4().hex[:6]}@example.com"
    stack.smtp.refused.add(address)
    task_id = send_email(stack, address)

    dead = wait_for(lambda: stack.dead_letters("notifier"), timeout=30)
    failed = wait_for(lambda: drain(stack.amqp_url, failed_probe), timeout=30)
    assert len(dead) == 1
    headers = dead[0].headers
    assert headers["x-exception-type"] == "PermanentDeliveryError"
    assert "550" in headers["x-exception-message"]
    assert headers["x-attempts"] == 1
    assert json.loads(failed[0].body)[1]["event"]["payload"]["recipient"] == address
    assert delivery(db, f"{task_id}/email").status == "failed"
    assert stack.smtp.to(address) == []


def test_a_command_sent_twice_with_one_task_id_sends_one_email_with_its_attachment_reference(
    stack, notifier, db
):
    sent_probe = bind_probe(stack.amqp_url, "notification.sent")
    address = f"twice-{uuid.uuid4().hex[:6]}@example.com"
    task_id = send_email(stack, address, attachment="reports/2026-11-24.csv")
    wait_for(lambda: stack.smtp.to(address))
    send_email(stack, address, task_id=task_id)  # e.g. an operator replaying the message

    announced = []  # both runs announce notification.sent: then both are done
    wait_for(lambda: announced.extend(drain(stack.amqp_url, sent_probe)) or len(announced) >= 2)
    [mail] = stack.smtp.to(address)
    assert "Attachment: reports/2026-11-24.csv" in mail["data"]
    assert delivery(db, f"{task_id}/email").attempts == 1


def test_as_deployed_the_notifier_cuts_a_send_at_its_soft_time_limit_and_retries_it_once(
    stack, clean_queues, db
):
    address = f"slow-{uuid.uuid4().hex[:6]}@example.com"
    worker = stack.deployed_worker(
        "notifier", SEND_SOFT_TIME_LIMIT="1", SEND_TIME_LIMIT="20", SMTP_TIMEOUT="30"
    ).start()
    stack.smtp.delay = 3.0
    try:
        task_id = send_email(stack, address)
        wait_for(lambda: (delivery(db, f"{task_id}/email") or ["?"])[0] == "interrupted")
        stack.smtp.delay = 0.0
        wait_for(lambda: stack.smtp.to(address), timeout=30)
        wait_for(lambda: stack.smtp.receiving == 0, timeout=10)
        # the sink has the mail before the worker commits "sent": wait for the record too
        wait_for(lambda: delivery(db, f"{task_id}/email").status == "sent", timeout=10)
    finally:
        stack.smtp.delay = 0.0
        worker.stop()

    assert len(stack.smtp.to(address)) == 1, "the interrupted attempt must not be delivered"
    assert delivery(db, f"{task_id}/email").attempts >= 2
    assert "SoftTimeLimitExceeded" in worker.output()


def test_a_generated_report_is_mailed_to_the_admins(stack, notifier, admin):
    report_id = str(uuid.uuid4())
    payload = {
        "report_id": report_id, "kind": "daily", "day": "2026-11-24",
        "summary": {"user.signed_up": 12, "notification.failed": 1},
    }  # fmt: skip
    publish_event(stack, "report.generated", str(uuid.uuid4()), payload)

    [mail] = wait_for(lambda: stack.smtp.to(admin), timeout=30)
    assert "Subject: Report daily for 2026-11-24" in mail["data"]
    assert "user.signed_up: 12" in mail["data"] and report_id in mail["data"]
