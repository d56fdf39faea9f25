"""A hard time limit kills the pool process; what it was running still ends in one place.

The notifier runs an event's handlers inside the event's entry task (``shared.worker.inline``),
so the hard limit that kills a hung welcome e-mail kills the entry task. The handler that
was running is dead-lettered as its own message (``time-limit``) and its final-failure
hook publishes ``notification.failed``, once; the handler not yet run still runs.
"""

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.test_event_handlers_in_entry_task import handler_id
from tests.support import JSON, bind_probe, drain, envelope, framed, headers, publish_raw, wait_for


def pool_processes(pid: int) -> list[int]:
    """The pool processes of the worker whose main process is ``pid``."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


@pytest.fixture
def admin() -> str:
    return f"admin-{uuid.uuid4().hex[:6]}@example.com"


def test_a_handler_killed_by_the_hard_limit_is_dead_lettered_once_with_notification_failed(
    stack, clean_queues, admin
):
    failed_probe = bind_probe(stack.amqp_url, "notification.failed")
    worker = stack.worker(
        "notifier", "--concurrency=1", SEND_SOFT_TIME_LIMIT="1", SEND_TIME_LIMIT="2",
        ADMIN_EMAILS=admin,
    ).start()  # fmt: skip
    event = envelope(f"hung-{uuid.uuid4().hex[:6]}@example.com")
    stack.smtp.delay = 60.0
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: stack.smtp.receiving, timeout=30)  # the welcome is inside DATA
        [process] = pool_processes(worker.proc.pid)
        os.kill(process, signal.SIGSTOP)  # hung past any soft limit: only the hard one acts
        dead = wait_for(lambda: stack.dead_letters("notifier"), timeout=30)
        stack.smtp.delay = 0.0
        wait_for(lambda: stack.smtp.to(admin), timeout=30)  # the handler not yet run
        failed = wait_for(lambda: drain(stack.amqp_url, failed_probe), timeout=30)
        time.sleep(3)  # anything more would have come by now
        dead += stack.dead_letters("notifier")
        failed += drain(stack.amqp_url, failed_probe)
    finally:
        stack.smtp.delay = 0.0
        worker.stop()

    [letter] = dead
    welcome = handler_id(event, "notifier.send_welcome_email")
    h = letter.headers
    assert (h["x-task"], h["id"]) == ("notifier.send_welcome_email", welcome)
    assert h["x-dead-letter-reason"] == "time-limit"
    assert (h["x-original-exchange"], h["x-original-queue"]) == ("notifier", "notifier.tasks")
    [notice] = failed
    payload = json.loads(notice.body)[1]["event"]["payload"]
    assert (payload["kind"], payload["caused_by"]) == ("welcome_email", event["id"])
    assert len(stack.smtp.to(admin)) == 1
    assert stack.smtp.to(event["payload"]["email"]) == []
