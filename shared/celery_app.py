"""The Celery classes every service's app uses: its publishes join the thread's confirmed
batch (``shared.confirms``), its task messages carry their times in UTC, and its worker
declares the service's topology on every connect."""

from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any

from celery import Celery, bootsteps
from celery.app.amqp import AMQP

from shared.confirms import current as current_batch
from shared.topology import declare_service


class UtcAMQP(AMQP):
    """Task messages whose ``eta`` and ``expires`` headers are UTC. Celery writes them in the
    app's ``timezone`` (Asia/Seoul: +09:00) or the caller's, and messages are stored data
    (a dead letter keeps its headers): one zone there, UTC, as every header the platform
    writes (``x-dead-lettered-at``). The same instant, so nothing is due at another time."""

    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        message = super().as_task_v2(*args, **kwargs)
        for key in ("eta", "expires"):
            message.headers[key] = in_utc(message.headers.get(key))
        return message


def in_utc(value: Any) -> Any:
    """An ISO 8601 time with an offset, as the same instant in UTC; anything else as is."""
    if not isinstance(value, str):
        return value
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    return when.astimezone(UTC).isoformat() if when.tzinfo is not None else value


class ServiceCelery(Celery):
    """Celery whose publishes join the thread's ``shared.confirms.confirmed_batch``, with
    task messages from ``UtcAMQP``."""

    amqp_cls = "shared.celery_app:UtcAMQP"

    def producer_or_acquire(  # type: ignore[override]  # celery-types: FallbackContext only
        self, producer: Any = None
    ) -> AbstractContextManager[Any]:
        batch = current_batch(self) if producer is None else None
        if batch is not None:
            return nullcontext(batch.producer)
        return super().producer_or_acquire(producer)


class DeclareTopology(bootsteps.StartStopStep):
    """Declare the service's DLX/DLQ and queues when the worker connects (or reconnects)."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: Any) -> None:
        channel = c.connection.channel()
        try:
            declare_service(channel, c.app.conf.service_topology)
        finally:
            channel.close()
