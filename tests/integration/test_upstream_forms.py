"""An upstream publishes without Celery framing: CloudEvents (structured and binary) or the
plain envelope, with a plain AMQP client. Each reaches the same entry task (one e-mail and
one fact per event id, however often it is published); anything malformed ends in both
subscribers' DLQs, as it was sent, with a reason, and no worker exits."""

import json
import uuid

import sqlalchemy as sa

from tests.support import JSON, envelope, publish_raw, wait_for

CE_JSON = {"content_type": "application/cloudevents+json", "content_encoding": "utf-8"}


def structured(event: dict, **changes: object) -> bytes:
    """``event`` (an envelope) as a CloudEvent in structured mode; a change to None drops."""
    ce = {
        "specversion": "1.0",
        "id": event["id"],
        "type": event["type"],
        "source": event["source"],
        "time": event["occurred_at"],
        "dataversion": event["version"],
        "datacontenttype": "application/json",
        "data": event["payload"],
    }
    ce.update(changes)
    return json.dumps({k: v for k, v in ce.items() if v is not None}).encode()


def binary(event: dict, prefix: str = "cloudEvents:", **changes: object) -> dict:
    """The headers of ``event`` as a CloudEvent in binary mode (data: the payload as body)."""
    attrs = {
        "specversion": "1.0",
        "id": event["id"],
        "type": event["type"],
        "source": event["source"],
        "time": event["occurred_at"],
        "dataschema": f"https://schemas.example/{event['type']}/v{event['version']}",
    }
    attrs.update(changes)
    return {prefix + k: v for k, v in attrs.items() if v is not None}


def publish(stack, body: bytes, routing_key: str = "user.signed_up", **props) -> None:
    publish_raw(stack.amqp_url, "events", routing_key, body, **props)


def facts(db, event_id: str) -> int:
    query = sa.text("SELECT count(*) FROM reports.facts WHERE event_id = :id")
    with db.connect() as conn:
        return conn.execute(query, {"id": event_id}).scalar()


def test_cloudevents_and_plain_envelopes_reach_the_same_handlers_once_per_event(clean_queues, db):
    stack = clean_queues
    workers = [stack.worker(name).start() for name in ("notifier", "reports")]
    sent = {form: envelope(f"{form}-{uuid.uuid4().hex[:6]}@example.com") for form in
            ("structured", "binary", "binary-underscore", "plain")}  # fmt: skip
    try:
        for _ in range(2):  # the same event twice: deduplicated on its id
            e = sent["structured"]
            publish(stack, structured(e), **CE_JSON)
            e = sent["binary"]
            publish(stack, json.dumps(e["payload"]).encode(), **JSON,
                    application_headers=binary(e))  # fmt: skip
            e = sent["binary-underscore"]
            publish(stack, json.dumps(e["payload"]).encode(), **JSON,
                    application_headers=binary(e, prefix="cloudEvents_"))  # fmt: skip
            publish(stack, json.dumps(sent["plain"]).encode(), **JSON)
        for e in sent.values():
            email = e["payload"]["email"]
            wait_for(lambda email=email: stack.smtp.to(email), timeout=60)
            wait_for(lambda e=e: facts(db, e["id"]) == 1, timeout=60)
        assert [len(stack.smtp.to(e["payload"]["email"])) for e in sent.values()] == [1] * 4
        assert stack.dead_letters("notifier") == [] and stack.dead_letters("reports") == []
    finally:
        for worker in workers:
            worker.stop()


def malformed() -> dict[str, tuple[bytes, dict, str]]:
    """Per case: body, properties (headers included), the reason both DLQs must show."""
    e = envelope("malformed@example.com")
    data = json.dumps(e["payload"]).encode()
    return {
        "ce-no-id": (structured(e, id=None), CE_JSON, "malformed-cloudevent"),
        "ce-spec-0.3": (structured(e, specversion="0.3"), CE_JSON, "malformed-cloudevent"),
        "ce-not-json": (b"{not json", CE_JSON, "undecodable-body"),
        "ce-an-array": (b"[]", CE_JSON, "malformed-cloudevent"),
        "ce-xml-data": (structured(e, datacontenttype="application/xml"), CE_JSON,
                        "malformed-cloudevent"),
        "ce-bad-version": (structured(e, dataversion="two"), CE_JSON, "malformed-cloudevent"),
        "ce-batch": (b"[]", {"content_type": "application/cloudevents-batch+json"},
                     "malformed-cloudevent"),
        "ce-type-not-routing-key": (structured(e, type="report.generated"), CE_JSON,
                                    "routing-key-mismatch"),
        "ce-payload-breaks-contract": (structured(e, data={"email": "x"}), CE_JSON, "rejected"),
        "ce-id-not-a-uuid": (structured(e, id="crm-42"), CE_JSON, "rejected"),
        "binary-no-source": (data, {**JSON, "application_headers": binary(e, source=None)},
                             "malformed-cloudevent"),
        "binary-text-data": (data, {"content_type": "text/plain",
                                    "application_headers": binary(e)}, "malformed-cloudevent"),
        "binary-data-not-json": (b"\xff", {**JSON, "application_headers": binary(e)},
                                 "undecodable-body"),
        "binary-schema-without-version": (data, {**JSON, "application_headers": binary(
            e, dataschema="https://schemas.example/signup")}, "malformed-cloudevent"),
        "plain-no-type": (json.dumps({**e, "type": None}).encode(), JSON, "malformed-body"),
        "plain-not-json": (b"{", JSON, "undecodable-body"),
    }  # fmt: skip


def test_malformed_upstream_events_are_dead_lettered_as_sent_with_a_reason(clean_queues):
    stack = clean_queues
    workers = {name: stack.worker(name).start() for name in ("notifier", "reports")}
    pids = {name: w.proc.pid for name, w in workers.items()}
    cases = malformed()
    try:
        for case, (body, props, _reason) in cases.items():
            publish(stack, body, message_id=case, **props)
        good = envelope(f"after-{uuid.uuid4().hex[:6]}@example.com")
        publish(stack, structured(good), **CE_JSON)
        wait_for(lambda: stack.smtp.to(good["payload"]["email"]), timeout=60)
        dead: dict[str, dict] = {"notifier": {}, "reports": {}}
        for name, letters in dead.items():
            wait_for(lambda name=name, letters=letters: letters.update(
                {m.properties.get("message_id"): m for m in stack.dead_letters(name)}
            ) or len(letters) >= len(cases), timeout=60)  # fmt: skip
        for name, worker in workers.items():
            assert worker.proc.poll() is None, f"{name} worker exited:\n{worker.output()[-3000:]}"
            assert worker.proc.pid == pids[name]
    finally:
        for worker in workers.values():
            worker.stop()

    wrong = []
    for name, letters in dead.items():
        assert set(letters) == set(cases), name
        for case, (body, props, reason) in cases.items():
            message = letters[case]
            got = message.body if isinstance(message.body, bytes) else message.body.encode()
            assert got == body, f"{name}/{case}: the dead letter is the event as sent"
            assert message.properties.get("content_type") == props.get("content_type"), case
            for header, value in (props.get("application_headers") or {}).items():
                assert message.headers[header] == value, f"{name}/{case}: {header}"
            if message.headers["x-dead-letter-reason"] != reason:
                wrong.append((name, case, message.headers["x-dead-letter-reason"]))
            assert message.headers["x-exception-message"], f"{name}/{case}"
            assert message.headers["x-original-queue"] == f"{name}.events"
    assert not wrong, wrong
