"""Native delayed delivery for a worker that may not declare what the vhost shares.

Celery's ``DelayedDelivery`` consumer step declares the 28 ``celery_delayed_*`` levels and
``celery_delayed_delivery`` from every worker. That needs the configure right that would also
let any service delete them, and with them every other service's pending retries; without
it, the declare is refused and Celery only logs that native delayed delivery "will not be
available" while the worker runs on. Here the operator declares them (``topology apply``):
the consumer checks, each time it connects, that they exist (passive declares need no
right) and stops with what to run if not; the step only binds the service's own exchange
and queues (``shared.core.topology.bind_delayed_delivery``).
"""

from typing import Any

from celery import bootsteps
from celery.worker.consumer.tasks import Tasks
from kombu import Connection

from shared.core.topology import bind_delayed_delivery, require_shared
from shared.worker.receive import ReceivingConsumer

_CELERYS = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class BindDelayedDelivery(bootsteps.StartStopStep):
    """In place of Celery's step: the service's own queues bound to delayed delivery, once
    all of them are declared (``DeclareTopology``; ``Tasks`` only those the worker
    consumes), and nothing shared declared."""

    requires = (Tasks, "shared.worker.app:DeclareTopology")

    def start(self, c: Any) -> None:
        channel = c.connection.channel()
        try:
            bind_delayed_delivery(channel, c.app.conf.service_topology)
        finally:
            channel.close()


class Consumer(ReceivingConsumer):
    """The platform's consumer, refusing to run on a vhost without the shared objects."""

    # celery-types declares Blueprint an attribute of type[Blueprint], not a class
    class Blueprint(ReceivingConsumer.Blueprint):  # type: ignore[misc,valid-type]
        default_steps = [
            f"{__name__}:BindDelayedDelivery" if step == _CELERYS else step
            for step in ReceivingConsumer.Blueprint.default_steps
        ]

    def connect(self) -> Connection:
        """Raises ``SharedTopologyMissing`` (not a connection error: the worker stops)
        before any step binds to a shared object that is not there."""
        connection = super().connect()
        require_shared(connection)
        return connection
