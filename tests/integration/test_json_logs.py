"""``LOG_FORMAT=json``: every worker log line is a JSON object (the start-up banner stays
text); a handler's lines name the service, the task, its id and the event id, so one
event's story is one query."""

import json
import uuid

import httpx

from tests.support import JSON, envelope, framed, headers, publish_raw, wait_for


def test_json_logs_tie_each_handler_line_to_its_task_and_event(clean_queues):
    stack = clean_queues
    worker = stack.worker("notifier", LOG_FORMAT="json").start()
    event = envelope(f"json-{uuid.uuid4().hex[:6]}@example.com")
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: stack.smtp.to(event["payload"]["email"]), timeout=30)
        # The entry task goes on after the e-mail (the admins' notice): stopping the worker
        # (SIGTERM to its process group) before it ends would cut its last lines.
        done = f"Task user.signed_up[{event['id']}] succeeded"
        wait_for(lambda: done in worker.output(), timeout=30)
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


def test_the_signup_api_logs_json_lines_too(stack, gateway, tmp_path):
    """uvicorn's own lines (start-up, access log) and the app's: one JSON object a line."""
    from tests.integration.test_tracing import serve_api

    with open(tmp_path / "api.log", "wb") as log:
        api, url = serve_api(stack, {"LOG_FORMAT": "json", "SMS_GATEWAY_URL": gateway.url}, log)
        try:
            email = f"json-api-{uuid.uuid4().hex[:6]}@example.com"
            answer = httpx.post(
                f"{url}/users/signup",
                json={"email": email, "name": "Ada", "phone": "+821012345678"},
            )
            assert answer.status_code == 201, answer.text
        finally:
            api.terminate()
            api.wait(10)
    text = (tmp_path / "api.log").read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the API logged nothing"
    parsed = [json.loads(line) for line in lines]  # every line is JSON
    assert all(line["service"] == "signup" and line["level"] for line in parsed)
    access = [line for line in parsed if "POST /users/signup" in line["message"]]
    assert access and "201" in access[0]["message"]
    assert email not in text  # ids, not personal data
