"""The broker topology as data: every exchange, queue, binding and argument, by name.

Per service ``svc`` (each declared in its own package, see ``shared.core.system``):

- exchange ``svc`` (topic): the service's private route. Commands arrive on routing key
  ``svc.tasks``; retries and replays of event handlers come back on ``svc.events``, so a
  retry never re-fans an event to the other subscribers.
- queue ``svc.tasks``: commands from other services and the service's own tasks.
- queue ``svc.events``: bound to ``events`` with the event types the service handles.
- exchange ``svc.dlx`` (fanout) and queue ``svc.dlq``: where every dead message ends.

Shared by the vhost, and declared only by the operator (``declare_all``, what
``eventful topology apply`` runs): the ``events`` topic exchange (routing key = event type)
whose alternate exchange ``events.unrouted`` keeps, in the queue of the same name, any event
nobody subscribes to; and Celery's native delayed delivery, 28 ``celery_delayed_*`` levels
and ``celery_delayed_delivery``, where every service's countdown retries wait. A worker only
checks that they exist and binds its own queues to them (``shared.worker.delayed``): a declare,
even of what exists, needs the configure right that would also let any service delete them
(``shared.ops.permissions``).

The queues that keep messages for an operator (each DLQ, ``events.unrouted``) have no
dead-letter exchange, so a message past their delivery limit is dropped. RabbitMQ 4.x
gives a quorum queue without one a limit of 20 and counts a requeued read (``basic_get``
then reject or a closed channel; the management UI's *Get messages*) as a delivery, so
they carry an explicit limit no reader reaches (``KEEP_DELIVERY_LIMIT``). Not 4.x's
"unlimited" ``-1``: RabbitMQ 3.x accepts it and drops the message on its first requeued
read (checked on 3.10.8). The same argument on every version, so a queue declared on 3.x
keeps it through an upgrade (an argument cannot be added to a live queue).

Work queues are quorum queues: replicated on a cluster, a delivery limit so a message
that kills its worker is dead-lettered instead of looping, at-least-once dead-lettering,
and Celery's native delayed delivery keeps countdown retries in the broker rather than in
a worker's memory.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import NotFound
from kombu import Connection, Exchange, Queue, binding
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)

from shared.core.system import Discovered

EVENTS_EXCHANGE = "events"
UNROUTED = "events.unrouted"
#: Deliveries of one message to a work queue's consumers before it is dead-lettered.
DELIVERY_LIMIT = 10
#: The delivery limit of the queues that keep messages for an operator: 2**31 - 1 requeued
#: reads, 68 years at one a second.
KEEP_DELIVERY_LIMIT = 2**31 - 1
#: Arguments of the queues that keep messages for an operator (DLQs, ``events.unrouted``).
KEEP_ARGUMENTS = {"x-queue-type": "quorum", "x-delivery-limit": KEEP_DELIVERY_LIMIT}

#: Celery's native delayed delivery: its levels ``celery_delayed_0`` to ``_27`` (a message
#: waits 2**level seconds in each level whose bit of its countdown is set), then this.
DELAY_LEVELS = 28
DELAYED_DELIVERY = "celery_delayed_delivery"

events_exchange = Exchange(
    EVENTS_EXCHANGE, type="topic", durable=True, arguments={"alternate-exchange": UNROUTED}
)
#: ``events`` as a service binds to it: checked (a passive declare), never declared.
events_to_bind = Exchange(EVENTS_EXCHANGE, type="topic", passive=True)
unrouted_exchange = Exchange(UNROUTED, type="fanout", durable=True)
unrouted_queue = Queue(UNROUTED, exchange=unrouted_exchange, queue_arguments=dict(KEEP_ARGUMENTS))


@dataclass(frozen=True)
class ServiceTopology:
    """What one service owns on the broker, and which events it consumes and emits."""

    name: str
    subscribes: tuple[str, ...] = ()
    publishes: tuple[str, ...] = ()

    @property
    def tasks_queue(self) -> str:
        return f"{self.name}.tasks"

    @property
    def events_queue(self) -> str:
        return f"{self.name}.events"

    @property
    def dlx(self) -> str:
        return f"{self.name}.dlx"

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def exchange(self) -> Exchange:
        return Exchange(self.name, type="topic", durable=True)

    def work_queue_arguments(self) -> dict[str, object]:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dlx,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        }

    def work_queues(self) -> list[Queue]:
        """The queues a worker of this service consumes, as Celery's ``task_queues``."""
        queues = [
            Queue(
                self.tasks_queue,
                exchange=self.exchange,
                routing_key=self.tasks_queue,
                queue_arguments=self.work_queue_arguments(),
            )
        ]
        if self.subscribes:
            queues.append(
                Queue(
                    self.events_queue,
                    queue_arguments=self.work_queue_arguments(),
                    # Its own route (retries, replays) and one binding per subscribed event.
                    bindings=[binding(self.exchange, routing_key=self.events_queue)]
                    + [binding(events_to_bind, routing_key=t) for t in self.subscribes],
                )
            )
        return queues

    def dead_letter_queue(self) -> Queue:
        dlx = Exchange(self.dlx, type="fanout", durable=True)
        return Queue(self.dlq, exchange=dlx, queue_arguments=dict(KEEP_ARGUMENTS))

    def queue_for(self, exchange: str, routing_key: str) -> str:
        """The work queue a message reached, from where it was published."""
        if exchange == EVENTS_EXCHANGE or routing_key == self.events_queue:
            return self.events_queue
        return self.tasks_queue


#: The system's services by name, as their packages declare them (``shared.core.system``).
SERVICES: Mapping[str, ServiceTopology] = Discovered(lambda declared: declared.topology)


def service(name: str) -> ServiceTopology:
    """A service's topology; KeyError names the known services."""
    return SERVICES[name]


_LEVELS = [f"celery_delayed_{level}" for level in range(DELAY_LEVELS)]
#: What the vhost shares and only the operator declares, as (kind, name).
SHARED_OBJECTS = [
    ("exchange", EVENTS_EXCHANGE),
    ("exchange", UNROUTED),
    ("queue", UNROUTED),
    ("exchange", DELAYED_DELIVERY),
    *[(kind, name) for name in _LEVELS for kind in ("exchange", "queue")],
]


class SharedTopologyMissing(RuntimeError):
    """The operator's shared objects are not on the vhost: ``topology apply`` was not run."""


def missing_shared(connection: Connection) -> list[str]:
    """The shared exchanges not on ``connection``'s vhost, as "exchange NAME".

    Passive declares: they need no permission, and a missing one closes only the channel
    that asked (a fresh one asks on). Exchanges only, as a worker checks at every connect:
    a passive declare of a quorum queue asks its leader, which in a failover may be away
    (``topology plan`` shows a missing queue)."""
    missing: list[str] = []
    channel: Any = connection.channel()  # py-amqp's: kombu types it StdChannel
    try:
        for kind, name in SHARED_OBJECTS:
            if kind != "exchange":
                continue
            try:
                channel.exchange_declare(name, "topic", passive=True)
            except NotFound:
                missing.append(f"{kind} {name}")
                channel = connection.channel()
    finally:
        channel.close()
    return missing


def require_shared(connection: Connection) -> None:
    """Raise ``SharedTopologyMissing``, saying what to run, unless every shared object is there."""
    missing = missing_shared(connection)
    if missing:
        raise SharedTopologyMissing(
            f"vhost {connection.virtual_host!r} lacks {', '.join(missing)}: shared objects"
            " are the operator's to declare; run `eventful topology apply`"
        )


def declare_shared(channel: Any) -> None:
    """Declare the ``events`` exchange and the queue that keeps unrouted events (operator)."""
    unrouted_queue.bind(channel).declare()
    events_exchange.bind(channel).declare()


def declare_service(channel: Any, topo: ServiceTopology) -> None:
    """Declare a service's exchange, DLX/DLQ first (so nothing dead-letters into a void),
    then its work queues, and bind them to ``events`` (which must exist: NotFound if not)."""
    topo.dead_letter_queue().bind(channel).declare()
    for queue in topo.work_queues():
        queue.bind(channel).declare()


def bind_delayed_delivery(channel: Any, topo: ServiceTopology) -> None:
    """Route ``topo``'s countdowns home: ``celery_delayed_delivery`` to its exchange, then
    to each of its queues, keyed ``#.<queue>`` (kombu's layout: the delay's 28 bits come
    first). Its own exchange only: everything else bound there is the operator's."""
    for queue in topo.work_queues():
        key = f"#.{queue.name}"
        channel.exchange_bind(topo.name, DELAYED_DELIVERY, key)
        channel.queue_bind(queue.name, topo.name, key)


def declare_all(connection: Connection, services: Iterable[ServiceTopology] | None = None) -> None:
    """Everything, the shared objects and Celery's delay levels included: what
    ``topology apply`` does, as the operator."""
    channel: Any = connection.channel()  # py-amqp's: kombu types it StdChannel
    try:
        declare_shared(channel)
        for topo in services or SERVICES.values():
            declare_service(channel, topo)
    finally:
        channel.close()
    declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")
    for topo in services or SERVICES.values():
        for queue in topo.work_queues():
            bind_queue_to_native_delayed_delivery_exchange(connection, queue)
