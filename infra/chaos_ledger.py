"""The broker's own copy of every event published (``chaos.ledger``, bound to ``events``
with ``#``): evidence outside the services of an event published twice under two ids."""

import json
from collections import Counter
from typing import Any

from kombu import Connection

from infra.chaos_faults import BAD_PREFIX
from infra.chaos_tally import Row

LEDGER = "chaos.ledger"


def declare_ledger(amqp_url: str) -> None:
    """The broker's own record of every event published to ``events`` (a quorum queue,
    so it survives the node's SIGKILL like the queues it shadows)."""
    with Connection(amqp_url) as conn:
        channel = conn.default_channel
        channel.queue_declare(
            LEDGER, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )
        channel.queue_bind(LEDGER, "events", "#")


def take_all(amqp_url: str, queue: str) -> list[tuple[dict[str, Any], bytes]]:
    """Every message in ``queue`` (headers, body), taken and acked: the run is over."""
    taken = []
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            taken.append((dict(message.headers or {}), message.body))
            channel.basic_ack(message.delivery_tag)
    return taken


def _ledger(amqp_url: str) -> tuple[Counter, Counter, Counter]:
    """From the broker's copy of every event: copies per event id, and distinct event ids
    per user (``user.signed_up``) and per delivery (``notification.sent``)."""
    copies: Counter = Counter()
    ids: dict[tuple[str, str], set[str]] = {}
    for headers, body in take_all(amqp_url, LEDGER):
        if str(headers.get("id", "")).startswith(BAD_PREFIX):
            continue
        try:
            event = json.loads(body)[1]["event"]
            payload = event["payload"]
            key = payload.get("delivery_id") or payload.get("email") or event["id"]
        except (ValueError, TypeError, KeyError, IndexError):
            continue
        copies[(event["type"], event["id"])] += 1
        ids.setdefault((event["type"], str(key)), set()).add(event["id"])
    per_thing = Counter({k: len(v) for k, v in ids.items()})
    per_type = Counter(t for t, _ in copies)
    return copies, per_thing, per_type


def broker_rows(amqp_url: str, accepted: int, sent: set[Any]) -> tuple[list[Row], str]:
    """What the broker's ledger saw: one event id per user and per delivery; and a note of
    the copies of one id (at-least-once, not failed)."""
    copies, per_thing, per_type = _ledger(amqp_url)
    signup_ids = {k: n for (t, k), n in per_thing.items() if t == "user.signed_up"}
    sent_ids = {k: n for (t, k), n in per_thing.items() if t == "notification.sent"}
    again: Counter[str] = Counter()
    for (event_type, _), n in copies.items():
        again[event_type] += n - 1
    note = (
        f"events in the broker's ledger: {dict(per_type)};"
        f" copies of an id published again (at-least-once): {dict(+again)}"
    )
    return [
        Row(
            "broker: user.signed_up event ids per user",
            accepted,
            len(signup_ids),
            sum(n - 1 for n in signup_ids.values() if n > 1),
        ),
        Row(
            "broker: notification.sent ids per delivery",
            len(sent),
            len(sent_ids),
            sum(n - 1 for n in sent_ids.values() if n > 1),
        ),
    ], note
