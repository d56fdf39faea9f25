"""What an event the platform publishes shows outside its body: the ``kwargsrepr`` header
that Celery's task events carry to Flower (and Flower parses and indexes for its search on
each of a task's events) names the event's type and id, not its payload: no address in
Flower, and a few dozen characters to parse instead of up to a kilobyte (issue 28: Flower's
search index was 43 % of its CPU, most of it ``ast.literal_eval`` of that header)."""

import ast
import json
import uuid

from tests.support import bind_probe, drain, send_command, wait_for


def test_a_published_event_shows_its_type_and_id_not_its_payload(clean_queues):
    stack = clean_queues
    address = f"shown-{uuid.uuid4().hex[:8]}@example.com"
    probe = bind_probe(stack.amqp_url, "notification.sent")
    worker = stack.worker("notifier", ADMIN_EMAILS="").start()
    try:
        send_command(stack, "notifier.send_email", to=address, subject="s", body="b")
        (sent,) = wait_for(lambda: drain(stack.amqp_url, probe), timeout=60)
    finally:
        worker.stop()
    event = json.loads(sent.body)[1]["event"]
    assert event["payload"]["recipient"] == address  # the body carries the payload
    shown = sent.headers["kwargsrepr"]
    assert ast.literal_eval(shown) == {"event": {"type": "notification.sent", "id": event["id"]}}
    assert address not in shown and address not in sent.headers["argsrepr"]
