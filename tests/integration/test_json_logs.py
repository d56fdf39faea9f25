"""``LOG_FORMAT=json``: every worker log line is a JSON object (the start-up banner stays
text); a handler's lines name the service, the task, its id and the event id, so one
event's story is one query."""

import json
import uuid

from tests.support import JSON, envelope, framed, headers, publish_raw, wait_for


def test_json_logs_tie_each_handler_line_to_its_task_and_event(clean_queues):
    stack = clean_queues
    worker = stack.worker("notifier", LOG_FORMAT="json").start()
    event = envelope(f"json-{uuid.uuid4().hex[:6]}@example.com")
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: stack.smtp.to(event["payload"]["email"]), timeout=30)
    finally:
        worker.stop()
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    about_event = [line for line in lines if line.get("event_id") == event["id"]]
    tasks = {line["task"] for line in about_event}
    assert {"user.signed_up", "notifier.send_welcome_email"} <= tasks
    for line in about_event:
        assert line["service"] == "notifier" and line["task_id"] and line["level"]
    received = [line for line in lines if line["message"].endswith(" received")]
    assert received and all(line.get("task_id") for line in received)
