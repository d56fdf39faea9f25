"""A message whose properties the client library cannot decode stops no worker: it is
dead-lettered as ``undecodable-frame``, and the next message on the same connection is
handled as itself.

Published as an upstream (``eventful upstream add``) with a plain AMQP client writing the
property bytes itself: what RabbitMQ forwards to every subscriber although py-amqp cannot
read (a header table nested 1,200 deep; 500 deep, which py-amqp decodes but cannot
encode again; a property string that is not UTF-8; a header timestamp past year 9999; a
header name that is not UTF-8).
"""

import json
import struct
import subprocess
import sys
import uuid

import amqp
from kombu import Connection
from sqlalchemy import text

from shared.core.db import migrate
from shared.core.topology import SERVICES
from shared.ops.commands.common import OPS_MIGRATIONS
from shared.worker.frames import UNDECODABLE, install
from tests.integration.test_upstream_credentials import crm  # noqa: F401 (a fixture)
from tests.raw_properties import encode, nested, publish_properties, shortstr, table
from tests.support import JSON, envelope, framed, headers, publish_raw, wait_for

SUBSCRIBERS = ("notifier", "reports")


def poisons(event: dict) -> dict[str, bytes]:
    """Per case (its ``message_id``): properties that are valid AMQP but not to py-amqp."""
    kept = {**JSON, "delivery_mode": 2}
    task = table([(b"task", b"S" + struct.pack(">I", 14) + b"user.signed_up")])
    late = table([(b"at", b"T" + struct.pack(">Q", 2**63 - 1))])
    cases = {
        "deep-headers": {"application_headers": nested(1200)},
        "headers-too-deep-to-copy": {"application_headers": nested(500)},
        "content-type-not-utf8": {"content_type": shortstr(b"\xff\xfeapplication/json"),
                                  "application_headers": task},
        "timestamp-past-9999": {"application_headers": late},
        "header-name-not-utf8": {"application_headers": table([(b"\xff\xfe", b"V")])},
    }  # fmt: skip
    return {
        case: encode({**kept, "message_id": f"{case}-{event['id']}"}, raw)
        for case, raw in cases.items()
    }


def facts_of(db, event_id: str) -> int:
    with db.connect() as conn:
        query = "SELECT count(*) FROM reports.facts WHERE event_id::text = :id"
        return conn.execute(text(query), {"id": event_id}).scalar_one()


def test_undecodable_properties_are_dead_lettered_and_the_next_event_is_handled(
    clean_queues, crm, db  # noqa: F811
):  # fmt: skip
    stack, (_prefix, upstream) = clean_queues, crm
    workers = {name: stack.worker(name) for name in SUBSCRIBERS}
    bad = envelope("poison@example.com")
    sent = poisons(bad)
    good = envelope(f"after-poison-{uuid.uuid4().hex[:6]}@example.com")
    try:  # each stopped, whichever start fails
        for worker in workers.values():
            worker.start()
        pids = {name: w.proc.pid for name, w in workers.items()}
        for raw in sent.values():
            publish_properties(upstream, "events", "user.signed_up", framed(bad), raw)
        publish_raw(upstream, "events", "user.signed_up", framed(good),
                    application_headers=headers(good), **JSON)  # fmt: skip
        wait_for(lambda: stack.smtp.to(good["payload"]["email"]), timeout=60)
        wait_for(lambda: facts_of(db, good["id"]) > 0, timeout=60)
        letters = {name: [] for name in SUBSCRIBERS}
        for name, got in letters.items():
            wait_for(lambda n=name, g=got: g.extend(stack.dead_letters(n)) or len(g) >= len(sent),
                     timeout=30)  # fmt: skip
        for name, worker in workers.items():
            assert worker.proc.poll() is None, f"{name} exited:\n{worker.output()[-3000:]}"
            assert worker.proc.pid == pids[name]
            assert "Unrecoverable error" not in worker.output(), worker.output()[-3000:]
    finally:
        for worker in workers.values():
            worker.stop()

    for name, got in letters.items():
        by_id = {m.properties.get("message_id"): m for m in got}
        assert set(by_id) == {f"{case}-{bad['id']}" for case in sent}, (name, by_id)
        for message in got:
            assert message.headers["x-dead-letter-reason"] == "undecodable-frame", message.headers
            assert message.body == framed(bad), "the body is kept as it arrived"
            assert message.headers["x-original-queue"] == f"{name}.events"
            assert message.headers["x-undecodable-properties"], "the raw properties are kept"
    assert len(stack.smtp.to(good["payload"]["email"])) == 1
    assert facts_of(db, good["id"]) == 1
    assert facts_of(db, bad["id"]) == 0


def test_after_undecodable_properties_the_next_message_on_the_channel_arrives_as_itself(
    clean_queues,
):
    """py-amqp keeps per-channel frame state (the partial message, the frame type due): a
    decode error left it behind and glued the next message to the poisoned one's delivery
    (its tag, its redelivered flag). With the guard, a plain consumer gets both, each as
    itself, on one connection."""
    install()
    stack, queue = clean_queues, SERVICES["reports"].events_queue
    poison = encode({**JSON, "message_id": "poison"}, {"application_headers": nested(1200)})
    publish_properties(stack.amqp_url, "", queue, b"first", poison)
    publish_raw(stack.amqp_url, "", queue, b"second", message_id="valid",
                application_headers={"n": 2}, **JSON)  # fmt: skip
    got: list[amqp.Message] = []
    with Connection(stack.amqp_url) as conn:
        channel = conn.channel()
        channel.auto_decode = False
        channel.basic_consume(queue, callback=got.append)
        while len(got) < 2:
            conn.drain_events(timeout=10)
        for message in got:
            channel.basic_ack(message.delivery_tag)
    first, second = got
    assert (first.body, first.delivery_tag, first.properties["message_id"]) == (
        b"first",
        1,
        "poison",
    )
    assert "RecursionError" in first.properties[UNDECODABLE]["error"]
    assert (second.body, second.delivery_tag, second.delivery_info["redelivered"]) == (
        b"second",
        2,
        False,
    )
    assert second.properties["message_id"] == "valid" and second.headers == {"n": 2}
    assert UNDECODABLE not in second.properties


def eventful(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.ops", *args], env=stack.env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_an_operator_lists_replays_and_purges_an_undecodable_dead_letter(clean_queues):
    """Native dead-lettering (when the worker's own copy cannot be published) puts the
    original, properties and all, in the DLQ: the ``eventful dlq`` tools read it too."""
    stack, dlq = clean_queues, SERVICES["notifier"].dlq
    migrate(stack.database_url, "ops", OPS_MIGRATIONS)
    poison = encode({**JSON, "message_id": "native"}, {"application_headers": nested(1200)})
    publish_properties(stack.amqp_url, "", dlq, b"kept", poison)

    listed = eventful(stack, "dlq", "list", "notifier", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [letter["body"] for letter in json.loads(listed.stdout)] == ["b'kept'"]
    replayed = eventful(stack, "dlq", "replay", "notifier")
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert "replayed 0 of 1" in replayed.stdout  # no task id: nothing a worker could run
    (kept,) = stack.dead_letters("notifier")  # moved by the listing: now readable anywhere
    assert (kept.body, kept.properties["message_id"]) == (b"kept", "native")
    assert kept.headers[f"{UNDECODABLE}-error"].startswith("RecursionError")
    assert kept.headers[UNDECODABLE]

    publish_properties(stack.amqp_url, "", dlq, b"dropped", poison)
    purged = eventful(stack, "dlq", "purge", "notifier", "--yes")
    assert purged.returncode == 0 and "purged 1 message(s)" in purged.stdout, purged.stderr
