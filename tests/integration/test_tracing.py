"""One signup, followed: a trace from the HTTP request to the reports read model, the ids
on every message, and the logs that name both.

Every process exports its spans with the SDK's OTLP exporter to a real OTLP/HTTP receiver
on loopback (``infra.otlp_sink``), configured only by the standard ``OTEL_*`` variables:
the API runs under uvicorn, the workers as deployed, each a process of its own.
"""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
import sqlalchemy as sa
from kombu import Connection

from infra.otlp_sink import OtlpSink, Span, render
from infra.processes import ROOT
from shared.core.db import migrate
from shared.core.topology import SERVICES
from shared.core.tracing import CAUSATION, CORRELATION
from shared.ops.commands.common import OPS_MIGRATIONS
from shared.ops.dlq import depth
from tests.integration.test_upstream_forms import CE_JSON, binary, structured
from tests.support import (
    JSON,
    drain,
    envelope,
    framed,
    free_port,
    headers,
    publish_raw,
    wait_for,
)  # fmt: skip

TOKEN = "trace-token"


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink().start()
    yield s
    s.stop()


def otel(sink: OtlpSink, **extra: str) -> dict[str, str]:
    """What an operator sets to send traces to a collector (batches every 0.1 s here)."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LOG_FORMAT": "json",
        "ADMIN_EMAILS": "",
        **extra,
    }


def serve_api(stack, env: dict[str, str], log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "services.signup.api:app", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**stack.env, **env}, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/livez", timeout=2).status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, "the API exited"
            return False

    try:
        wait_for(answers, timeout=30)
    except BaseException:
        proc.kill()  # no caller holds it yet
        proc.wait(10)
        raise
    return proc, url


SIGNUP_PATH = (
    "POST /users/signup",
    "apply_async/user.signed_up",
    "run/user.signed_up",
    "run/notifier.send_welcome_email",
    "apply_async/notification.sent",
    "run/notification.sent",
    "run/reports.record_signup",
    "run/reports.record_notification_sent",
)


def by_name(spans: list[Span]) -> dict[str, list[Span]]:
    named: dict[str, list[Span]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_signup_is_one_trace_from_the_http_request_through_notifier_to_reports(
    clean_queues, gateway, sink, db, tmp_path
):
    stack = clean_queues
    env = otel(sink)
    workers = [stack.worker(name, **env) for name in ("notifier", "reports")]
    email = f"traced-{uuid.uuid4().hex[:6]}@example.com"
    with open(tmp_path / "api.log", "wb") as log, ExitStack() as stop:
        for worker in workers:
            stop.callback(worker.stop)  # before the start: stopped whichever start fails
            worker.start()
        api, url = serve_api(stack, {**env, "SMS_GATEWAY_URL": gateway.url, "API_TOKEN": TOKEN},
                             log)  # fmt: skip
        try:
            answer = httpx.post(
                f"{url}/users/signup",
                json={"email": email, "name": "Ada", "phone": "+821012345678"},
            )
            assert answer.status_code == 201, answer.text
            with db.connect() as conn:
                event_id, row_headers = conn.execute(
                    sa.text("SELECT id, headers FROM signup.outbox"
                            " WHERE body->'payload'->>'email' = :e"), {"e": email}
                ).one()  # fmt: skip
            event_id = str(event_id)
            # The row keeps the request's trace context and the story's ids for the relay.
            assert row_headers[CORRELATION] == event_id and CAUSATION not in row_headers
            trace_id = row_headers["traceparent"].split("-")[1]

            def whole_trace() -> dict[str, list[Span]]:
                # Each process exports in its own batches: wait for every hop, not the last.
                named = by_name(sink.trace(trace_id))
                return named if all(name in named for name in SIGNUP_PATH) else {}

            try:
                spans = wait_for(whole_trace, timeout=60)
            except AssertionError:
                spans = by_name(sink.trace(trace_id))  # the assertions below say what is missing
        finally:
            api.terminate()
            api.wait(10)

    # The path of one signup, each hop a span named by its task, in one trace.
    for name in SIGNUP_PATH:
        assert name in spans, (name, sorted(spans))
    every = [s for group in spans.values() for s in group]
    assert {s.service for s in every} >= {"signup", "notifier", "reports"}
    ids = {s.span_id for s in every}
    (root,) = [s for s in every if s.parent_id not in ids]
    assert root.name == "POST /users/signup" and root.service == "signup"
    entry = {s.service: s for s in spans["run/user.signed_up"]}
    assert set(entry) == {"notifier", "reports"}

    # Each run names its task and event; the ids say who caused what.
    (welcome,) = spans["run/notifier.send_welcome_email"]
    (recorded,) = spans["run/reports.record_notification_sent"]
    for span in [*entry.values(), welcome, spans["run/reports.record_signup"][0]]:
        assert span.attributes["eventful.event_id"] == event_id
        assert span.attributes["eventful.correlation_id"] == event_id
        assert span.attributes["eventful.task_id"]
    assert entry["notifier"].attributes["eventful.task_id"] == event_id
    assert welcome.attributes["eventful.causation_id"] == event_id
    # Handlers run inside their event's entry task: each its own run span, child of the entry's.
    assert welcome.parent_id == entry["notifier"].span_id
    assert recorded.attributes["eventful.correlation_id"] == event_id
    sent_event = recorded.attributes["eventful.event_id"]
    (sent_publish,) = spans["apply_async/notification.sent"]
    assert sent_publish.attributes["eventful.task_id"] == sent_event
    assert (
        sent_publish.attributes["eventful.causation_id"] == welcome.attributes["eventful.task_id"]
    )

    # The workers' JSON lines about this signup carry the trace id and the task id.
    lines = [line for w in workers for line in json_lines(w.output())]
    traced = [line for line in lines if line.get("trace_id") == trace_id]
    assert {"user.signed_up", "notifier.send_welcome_email"} <= {
        line.get("task") for line in traced
    }
    assert all(line["task_id"] and line["correlation_id"] == event_id for line in traced)
    print(f"\ntrace {trace_id}\n{render(every)}")  # what `pytest -s` shows (README)
    print("\n".join(json.dumps(line) for line in traced if line["level"] == "INFO"))


def test_a_retry_and_a_dead_letter_are_span_events_in_the_trace_the_upstream_started(
    clean_queues, sink
):
    stack = clean_queues
    worker = stack.worker("notifier", **otel(sink)).start()
    event = envelope(f"refused-{uuid.uuid4().hex[:6]}@example.com")
    trace_id, upstream_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    stack.smtp.busy = 1  # "421 busy" once: the welcome e-mail is retried
    stack.smtp.refused.add(event["payload"]["email"])  # then refused for good: dead-lettered
    try:
        traceparent = f"00-{trace_id}-{upstream_span}-01"
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event), **JSON,
                    application_headers=headers(event, traceparent=traceparent))  # fmt: skip
        dead = wait_for(lambda: stack.dead_letters("notifier"), timeout=60)

        def dead_letter_span() -> list[Span]:
            return [s for s in sink.trace(trace_id) if s.name.startswith("dead_letter/")]

        (dl_span,) = wait_for(dead_letter_span, timeout=30)
    finally:
        stack.smtp.busy = 0
        worker.stop()

    spans = by_name(sink.trace(trace_id))
    (entry,) = spans["run/user.signed_up"]
    assert entry.parent_id == upstream_span  # the upstream's traceparent was continued
    runs = spans["run/notifier.send_welcome_email"]
    assert len(runs) == 2
    retried = [s for s in runs if "retry" in s.event_names]
    assert len(retried) == 1
    (_, retry), *_ = [e for e in retried[0].events if e[0] == "retry"]
    assert retry["exception.type"] == "TryLater" and retry["retry.attempt"] == 1
    assert dl_span.name == "dead_letter/notifier.send_welcome_email"
    (_, dead_lettered), *_ = dl_span.events
    assert dead_lettered["reason"] == "task-failed"
    assert dead_lettered["queue"] == "notifier.dlq"

    # The dead-letter copy keeps the story's ids: caused by the event, correlated to it.
    (message,) = dead
    kept = message.headers
    assert kept[CORRELATION] == event["id"] and kept[CAUSATION] == event["id"]
    assert kept["traceparent"].split("-")[1] == trace_id


def test_without_otel_variables_the_ids_still_ride_on_the_dead_letter_and_its_replay(
    clean_queues,
):
    stack = clean_queues
    migrate(stack.database_url, "ops", OPS_MIGRATIONS)
    worker = stack.worker("notifier", ADMIN_EMAILS="").start()
    event = envelope(f"plain-{uuid.uuid4().hex[:6]}@example.com")
    stack.smtp.refused.add(event["payload"]["email"])
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: depth(stack.amqp_url, SERVICES["notifier"]) == 1, timeout=60)
    finally:
        worker.stop()
    (dead,) = peek(stack.amqp_url, "notifier.dlq")
    assert "traceparent" not in dead.headers
    assert dead.headers[CORRELATION] == event["id"] and dead.headers[CAUSATION] == event["id"]

    replay = subprocess.run([sys.executable, "-m", "shared.ops", "dlq", "replay", "notifier"],
                            env=stack.env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "replayed: " in replay.stdout, replay.stdout + replay.stderr
    (again,) = stack.dead_letters("notifier") or drain(stack.amqp_url, "notifier.tasks")
    assert again.headers[CORRELATION] == event["id"] and again.headers[CAUSATION] == event["id"]


def peek(amqp_url: str, queue: str) -> list:
    """The messages in ``queue``, left there."""
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        taken = []
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            taken.append(message)
        for message in taken:
            channel.basic_reject(message.delivery_tag, requeue=True)
    return taken


@pytest.mark.parametrize("form", ["structured", "binary", "plain"])
def test_an_upstream_s_trace_is_continued_whatever_form_its_event_takes(clean_queues, sink, form):
    """The CloudEvents distributed-tracing extension (``traceparent`` attribute; binary mode
    ``cloudEvents:traceparent``) and a plain envelope's ``traceparent`` AMQP header."""
    stack = clean_queues
    event = envelope(f"ce-{form}-{uuid.uuid4().hex[:6]}@example.com")
    trace_id, upstream_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_id}-{upstream_span}-01"
    if form == "structured":
        body, props = structured(event, traceparent=traceparent), CE_JSON
    elif form == "binary":
        body = json.dumps(event["payload"]).encode()
        props = {**JSON, "application_headers": binary(event, traceparent=traceparent)}
    else:
        body, props = json.dumps(event).encode(), {**JSON, "application_headers": {
            "traceparent": traceparent}}  # fmt: skip
    worker = stack.worker("notifier", **otel(sink)).start()
    try:
        publish_raw(stack.amqp_url, "events", "user.signed_up", body, **props)
        runs = wait_for(lambda: by_name(sink.trace(trace_id)).get("run/user.signed_up"), 60)
    finally:
        worker.stop()
    (entry,) = runs
    assert entry.parent_id == upstream_span
    assert entry.attributes["eventful.event_id"] == event["id"]
