"""How a service talks to the others: events to ``events``, commands to their owner, both
confirmed by the broker before the call returns. ``Service`` is one (``declaration``)."""

import os
import threading
from typing import Any

from celery import Celery

from shared.contracts.models import Command, Event
from shared.core.topology import ServiceTopology, declare_service
from shared.worker.confirms import current as current_batch


class Publishing:
    """What a service publishes with: its Celery app and its topology (it may publish
    only the events its topology names)."""

    celery: Celery
    topology: ServiceTopology
    _declared: bool = False
    #: The process's (pid) producer for its main thread (``_producer``).
    _held: tuple[int, Any] | None = None

    @property
    def name(self) -> str:
        return self.topology.name

    def _ensure_declared(self) -> None:
        if not self._declared:
            with self.celery.connection_for_write() as conn:
                declare_service(conn.default_channel, self.topology)
            self._declared = True

    def _producer(self) -> Any:
        """The producer the main thread publishes with, taken from Celery's pool once per
        process and kept: given back after each publish, the pool's is bound again (its
        channel, a copy of its exchange) on the next one, about 0.09 ms CPU of a confirmed
        publish's 0.5. It is still Celery's producer on a pooled connection: a connection
        lost mid-publish is recovered by kombu's ``ensure`` as before. None (Celery
        acquires one per call, as before) on another thread, which must not share its
        channel, or inside a ``confirmed_batch``, whose producer is the batch's."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if current_batch(self.celery) is not None:
            return None
        held = self._held
        if held is None or held[0] != os.getpid():  # a forked child: not its parent's
            held = self._held = (os.getpid(), self.celery.producer_pool.acquire(block=True))
        return held[1]

    def publish(self, event: Event) -> None:
        """Publish a domain event to ``events`` (confirmed by the broker before returning)."""
        self._ensure_declared()
        self.publish_body(event.type, event.model_dump(mode="json"), event.id)

    def publish_body(
        self, event_type: str, body: dict[str, Any], event_id: Any, **options: Any
    ) -> None:
        """Publish an event already in its JSON form (what the outbox stores), in the wire
        format the README documents; ``options`` go to Celery's ``send_task``.

        Its ``kwargsrepr`` (what Celery's task events show Flower, which parses it again on
        each event of the task) names the event, not its payload: no personal data there."""
        if event_type not in self.topology.publishes:
            raise ValueError(f"{self.name} may not publish {event_type!r}")
        shown = {"event": {"type": event_type, "id": str(event_id)}}
        if options.get("producer") is None:
            options["producer"] = self._producer()
        self.celery.send_task(
            event_type,
            kwargs={"event": body},
            task_id=str(event_id),
            declare=[],
            ignore_result=True,
            argsrepr="()",  # given, as kwargsrepr: Celery's saferepr is costly per publish
            kwargsrepr=repr(shown),
            **options,
        )

    def send(self, command: Command, **options: Any) -> str:
        """Send a command to the service that owns it; returns the task id.

        The command's result is stored by its owner, in the owner's schema: read it
        through that service (e.g. an HTTP endpoint it serves) or an app of the owner,
        not through this service's result backend.
        """
        self._ensure_declared()
        return self.celery.send_task(
            command.task, kwargs=command.model_dump(mode="json"), declare=[], **options
        ).id
