"""``topology recreate QUEUE``: a live queue declared with other arguments (by an earlier
version, or by hand) gets the ones it is declared with now, and keeps its messages.

RabbitMQ cannot change a queue's arguments, and while they differ every declaration of
the queue is refused (PRECONDITION_FAILED): ``topology apply``, a worker starting, a
publisher. So its messages move aside to ``QUEUE.recreating`` (``shared.ops.moving``: in
order, a transaction per batch), the queue is deleted only if empty and unconsumed
(``QueueBusy`` otherwise: quorum queues refuse ``if_empty``), it alone is declared again
with its bindings (other queues may still differ), and the messages move back. Killed at
any point, each message is in one of the two queues once; running it again finishes the
job (``topology plan`` shows a ``QUEUE.recreating`` left behind).

A message routed to the queue between its deletion and its declaration has nowhere to go:
a dead letter a worker publishes to its DLX then is confirmed and its original acked, so
it is lost. So the system must be stopped, and the command enforces it: it refuses
(``SystemRunning``) while a worker consumes any work queue (passive declares) or any
client but itself is connected to the vhost (the management API's connection list, which
can lag a busy broker), looking before it starts (nothing touched) and again just before
it deletes the queue (its messages then wait in ``QUEUE.recreating``, and the next run
finishes the job). What it cannot see: a connection opened after that last look, and
retries waiting in Celery's delay queues (``celery_delayed_*``), which come due into work
queues on their own: recreate a work queue when those are empty.
"""

import uuid
from functools import partial
from typing import Any

import amqp.exceptions
from kombu import Connection
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
)

from shared.core.topology import KEEP_ARGUMENTS, SERVICES, unrouted_queue
from shared.ops.management import Management
from shared.ops.moving import move


class QueueBusy(Exception):
    """A queue that still has messages or consumers after its messages moved aside."""


class SystemRunning(QueueBusy):
    """Workers consume work queues, or other clients are connected to the vhost."""


def recreate(amqp_url: str, name: str, management: Management) -> int:
    """Recreate queue ``name`` as declared; how many messages it kept."""
    work = {q.name: q for t in SERVICES.values() for q in t.work_queues()}
    kept = [unrouted_queue, *(t.dead_letter_queue() for t in SERVICES.values())]
    queues = {**work, **{q.name: q for q in kept}}
    if name not in queues:
        raise KeyError(f"no declared queue {name!r}; declared: {', '.join(sorted(queues))}")
    queue = queues[name]
    aside = f"{name}.recreating"
    me = f"eventful topology recreate {uuid.uuid4()}"
    options = {"client_properties": {"connection_name": me}}
    with Connection(amqp_url, connect_timeout=10, transport_options=options) as conn:
        conn.ensure_connection(max_retries=1)
        alone = partial(_refuse_unless_alone, conn, management, me, list(work))
        alone()
        channel: Any = conn.channel()  # py-amqp's Channel: kombu types it as StdChannel
        channel.auto_decode = False  # the copies are the bytes as they were sent
        channel.queue_declare(aside, durable=True, auto_delete=False, arguments=KEEP_ARGUMENTS)
        if not _as_declared(conn, name, dict(queue.queue_arguments or {})):
            move(channel, name, aside)
            alone()
            _delete_if_idle(channel, name)
        queue.bind(channel).declare()  # its exchange(s), itself, its bindings
        if name in work:  # and its route from Celery's delay levels
            bind_queue_to_native_delayed_delivery_exchange(conn, queue)
        moved_back = move(channel, aside, name)
        _delete_if_idle(channel, aside)
    return moved_back


def _refuse_unless_alone(
    conn: Connection, management: Management, me: str, work_queues: list[str]
) -> None:
    """``SystemRunning`` if a worker consumes a work queue (passive declares: exact at once)
    or a client other than this command (``me``) is connected (the management API's list,
    which can lag a busy broker by seconds: relays, APIs and upstreams consume nothing)."""
    consumed = [q for q in work_queues if _consumers(conn, q)]
    others = [
        c for c in management.connections(conn.virtual_host)
        if (c.get("client_properties") or {}).get("connection_name") != me
    ]  # fmt: skip
    if consumed or others:
        users = ", ".join(sorted({str(c.get("user")) for c in others})) or "-"
        raise SystemRunning(
            f"workers consume {', '.join(consumed) or 'no work queue'}; {len(others)}"
            f" other connection(s) open on vhost {conn.virtual_host!r} (users: {users}): a"
            " message routed to the queue while it is recreated would be lost; stop the"
            " system (workers, outbox relays, APIs, Flower), then run `topology recreate` again"
        )


def _consumers(conn: Connection, name: str) -> int:
    """Consumers of queue ``name`` now (0 if it does not exist), on a channel of its own: a
    passive declare of a missing queue closes its channel."""
    channel: Any = conn.channel()  # py-amqp's Channel: kombu types it as StdChannel
    try:
        count: int = channel.queue_declare(name, passive=True).consumer_count
    except amqp.exceptions.NotFound:
        return 0
    channel.close()
    return count


def _delete_if_idle(channel: Any, name: str) -> None:
    """Delete an empty queue nobody consumes; ``QueueBusy`` (nothing deleted) otherwise."""
    live = channel.queue_declare(name, passive=True)
    if live.message_count or live.consumer_count:
        raise QueueBusy(
            f"{name} still has {live.message_count} message(s) and {live.consumer_count}"
            " consumer(s): stop the system, then run `topology recreate` again"
        )
    channel.queue_delete(name)


def _as_declared(conn: Connection, name: str, arguments: dict[str, Any]) -> bool:
    """Whether ``name`` is live with ``arguments`` (declared now if it was missing)."""
    channel: Any = conn.channel()  # py-amqp's Channel: kombu types it as StdChannel
    try:
        channel.queue_declare(name, durable=True, auto_delete=False, arguments=arguments)
    except amqp.exceptions.PreconditionFailed:
        return False  # the broker closed the channel
    channel.close()
    return True
