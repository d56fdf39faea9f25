"""No message, however malformed, makes a worker exit: each is dead-lettered with its reason.

Every case here is what a publisher in another language sends by mistake, published with a
plain AMQP client to ``events`` as an upstream would. Both subscribers of
``user.signed_up`` must keep their worker process (same PID), put every case in their DLQ
with the reason the docs list (failure semantics), and go on handling the next good event.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta

from tests.support import JSON, envelope, framed, headers, publish_raw, wait_for


def cases() -> dict[str, tuple[bytes, dict, dict, str]]:
    """Per case: body, properties, headers, the reason both DLQs must show."""
    e = envelope("malformed@example.com")
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    next_year = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    return {
        # The three shapes a Node.js publisher crashed workers with.
        "bare-envelope": (json.dumps(e).encode(), JSON, headers(e), "malformed-body"),
        "no-content-type": (framed(e), {}, headers(e), "content-type-not-allowed"),
        "no-id-header": (framed(e), JSON, headers(e, id=None), "malformed-headers"),
        # Header types a sender can get wrong.
        "retries-a-string": (framed(e), JSON, headers(e, retries="three"), "malformed-headers"),
        "id-a-number": (framed(e), JSON, headers(e, id=12345), "malformed-headers"),
        "task-a-number": (framed(e), JSON, headers(e, task=7), "malformed-headers"),
        "eta-garbage": (framed(e), JSON, headers(e, eta="next tuesday"), "malformed-headers"),
        "expires-garbage": (framed(e), JSON, headers(e, expires=[1]), "malformed-headers"),
        "timelimit-garbage": (framed(e), JSON, headers(e, timelimit="1,2"), "malformed-headers"),
        "headers-not-a-table": (framed(e), JSON, None, "no-task-header"),
        # Bodies that are JSON but not [args, kwargs, embed].
        "body-two-elements": (json.dumps([[], {}]).encode(), JSON, headers(e), "malformed-body"),
        "args-an-object": (json.dumps([{}, {}, {}]).encode(), JSON, headers(e), "malformed-body"),
        "kwargs-a-list": (json.dumps([[], [], {}]).encode(), JSON, headers(e), "malformed-body"),
        "embed-a-string": (json.dumps([[], {"event": e}, "x"]).encode(), JSON, headers(e),
                           "malformed-body"),
        "body-a-number": (b"42", JSON, headers(e), "malformed-body"),
        "body-empty": (b"", JSON, headers(e), "undecodable-body"),
        "body-not-utf8": (b"\xff\xfe[", JSON, headers(e), "undecodable-body"),
        # Found by the edge fuzzer (tests/fuzz): an empty body with no content_encoding (its
        # dead-letter copy could not be published), a UTF-16 body whose copy was re-encoded.
        "body-empty-no-properties": (b"", {}, headers(e), "content-type-not-allowed"),
        "body-utf-16-big-endian": (b"\xfe\xff" + json.dumps(e).encode("utf-16-be"),
                                   {**JSON, "content_encoding": "utf-16"}, headers(e),
                                   "malformed-body"),
        # Valid, but expired before it arrived: kept, not silently discarded.
        "expired": (framed(e), JSON, headers(e, expires=past), "expired"),
        # Held unacked in a worker past the broker's consumer_timeout, round after round.
        "eta-next-year": (framed(e), JSON, headers(e, eta=next_year), "eta-too-far"),
        "ignore-result-a-table": (framed(e), JSON, headers(e, ignore_result={"a": 1}),
                                  "malformed-headers"),
    }  # fmt: skip


def test_malformed_messages_are_dead_lettered_and_no_worker_exits(clean_queues):
    stack = clean_queues
    workers = {name: stack.worker(name) for name in ("notifier", "reports")}
    sent = cases()
    try:  # each stopped, whichever start fails
        for worker in workers.values():
            worker.start()
        pids = {name: w.proc.pid for name, w in workers.items()}
        for case, (body, props, hdrs, _reason) in sent.items():
            publish_raw(stack.amqp_url, "events", "user.signed_up", body, message_id=case,
                        application_headers=hdrs, **props)  # fmt: skip
        good = f"after-{uuid.uuid4().hex[:6]}@example.com"
        event = envelope(good)
        publish_raw(stack.amqp_url, "events", "user.signed_up", framed(event),
                    application_headers=headers(event), **JSON)  # fmt: skip
        wait_for(lambda: stack.smtp.to(good), timeout=60)

        dead: dict[str, dict] = {"notifier": {}, "reports": {}}
        for name, letters in dead.items():
            wait_for(lambda name=name, letters=letters: letters.update(
                {m.properties.get("message_id"): m for m in stack.dead_letters(name)}
            ) or len(letters) >= len(sent), timeout=60)  # fmt: skip
        for name, worker in workers.items():
            assert worker.proc.poll() is None, f"{name} worker exited:\n{worker.output()[-3000:]}"
            assert worker.proc.pid == pids[name]
            assert "Unrecoverable error" not in worker.output()
    finally:
        for worker in workers.values():
            worker.stop()

    wrong = []
    for name, letters in dead.items():
        assert set(letters) == set(sent), name
        for case, (body, _props, _hdrs, reason) in sent.items():
            message = letters[case]
            got = message.body or b""  # py-amqp reads a bodyless message as ''
            assert got == body, f"{name}/{case}: the body must arrive intact"
            got_reason = message.headers.get("x-dead-letter-reason", message.headers.get("x-death"))
            if got_reason != reason:
                wrong.append((name, case, got_reason))
            assert message.headers.get("x-exception-message"), f"{name}/{case}: {got_reason}"
            assert message.headers["x-original-queue"] == f"{name}.events"
    assert not wrong, wrong
    assert len(stack.smtp.to(good)) == 1
