"""Moving messages between queues (or round one queue) without losing, doubling or
reordering them: the mechanism under ``dlq list`` and ``topology recreate``.

AMQP cannot look at a queue's messages without taking them, and a taken message that goes
back (a closed channel, a reject with requeue) returns to the head of a quorum queue, in
no particular order (RabbitMQ 3.10.8 hands a batch of returns back shuffled once it holds
more than a few; see tests/integration/test_ops_dlq_reading.py), and on RabbitMQ 4.x each
return counts toward the queue's delivery limit. So a move takes at most ``batch``
messages from the head of the source, publishes an identical copy of each to the tail of
the target and acks the originals, in one AMQP transaction per batch. The copies are new
messages: a move costs no delivery.

Killed at any point, every message is in one of the two queues once, but order is kept
only up to the batch in flight: the committed batches are at the target's tail in order,
and the (at most ``batch``) messages taken and not yet committed go back to the head of
the source, in the broker's order, not theirs (the reshuffle above; no client can prevent
it once the process is gone). A pass round one queue (``dlq list``) killed part-way also
leaves the queue starting where the pass stopped: the messages it moved are at the tail.
"""

from collections.abc import Callable
from typing import Any

import amqp

from shared.worker.frames import readable_properties

#: At most this many messages are out of their queue (unacked) while a move runs.
BATCH = 50


def move(
    channel: Any,
    source: str,
    target: str,
    count: int | None = None,
    *,
    each: Callable[[amqp.Message], None] = lambda message: None,
    batch: int = BATCH,
) -> int:
    """Move ``count`` messages (None: until ``source`` is empty) from the head of ``source``
    to the tail of ``target``, calling ``each`` on every one; how many moved. ``channel``
    must not decode bodies (``auto_decode = False``): the copies are the bytes as sent."""
    channel.tx_select()
    moved = 0
    while count is None or moved < count:
        taken: list[amqp.Message] = []
        while len(taken) < (batch if count is None else min(batch, count - moved)):
            if (message := channel.basic_get(source, no_ack=False)) is None:
                break  # empty, or another reader holds the rest
            taken.append(message)
        if not taken:
            break
        for message in taken:
            each(message)
        _copies_to(channel, taken, target)
        moved += len(taken)
    return moved


def put_back(channel: Any, messages: list[amqp.Message], queue: str) -> None:
    """Messages taken from ``queue`` and held unacked, back to its tail in the order given,
    in one transaction (a closed channel would return them to its head, shuffled)."""
    if messages:
        channel.tx_select()
        _copies_to(channel, messages, queue)


def _copies_to(channel: Any, messages: list[amqp.Message], queue: str) -> None:
    """A copy of each of ``messages`` to ``queue``'s tail and the original acked, in order,
    committed as one transaction (the channel is in ``tx_select``)."""
    for message in messages:
        channel.basic_publish(copy_of(message), exchange="", routing_key=queue)
        channel.basic_ack(message.delivery_tag)
    channel.tx_commit()


def copy_of(message: amqp.Message) -> amqp.Message:
    """``message`` as it is (body, properties, headers), except ``user_id``, which the broker
    accepts only as the publisher's own name: kept as the ``x-user-id`` header, and
    properties py-amqp could not decode, kept as a note (``shared.worker.frames``). (py-amqp
    hands a bodyless message over as ``''``.)"""
    properties = readable_properties(message)
    if (user := properties.pop("user_id", None)) is not None:
        headers = properties.get("application_headers") or {}
        properties["application_headers"] = {**headers, "x-user-id": user}
    return amqp.Message(message.body or b"", **properties)
