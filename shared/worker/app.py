"""The one Celery app factory every service uses, and the task base class it installs."""

import math
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

from amqp.exceptions import ConnectionError as AmqpConnectionError
from celery import Celery, Task, bootsteps
from celery.app.task import X_DEATH_HEADERS  # type: ignore[attr-defined]  # not in celery-types
from celery.exceptions import Reject, Retry
from kombu.exceptions import OperationalError

from shared.core.logs import quiet_task_lines, use_json_logs
from shared.core.settings import Settings
from shared.core.topology import ServiceTopology, declare_service
from shared.core.tracing import install as install_tracing
from shared.worker.allowed import broker_user, stamped
from shared.worker.check import install as install_startup_check
from shared.worker.confirms import current as current_batch
from shared.worker.pool_writes import FinishPoolWrites
from shared.worker.progress import retried
from shared.worker.results import UTC_SESSION
from shared.worker.routing import router_for


def _pause_after_nack(exc: Exception, interval: float) -> None:
    """kombu retries a nacked publish at once on a fresh connection (``interval`` 0). During
    a quorum leader election every such retry is nacked again, and all of them are spent
    in milliseconds; pausing here lets the election finish (a few seconds)."""
    if not interval:
        time.sleep(0.5)


#: Rides out a leader election or a failover to another node: 30 attempts, 0.2 s rising to
#: 2 s apart, about a minute in all.
PUBLISH_RETRY_POLICY = {
    "max_retries": 30,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 2.0,
    "errback": _pause_after_nack,
}


#: What a task raises when the broker does not answer it (kombu's library error, or the
#: client's own when a connection breaks outside kombu's retries).
BROKER_AWAY = (OperationalError, AmqpConnectionError)


#: How long, in all, a task waits for a dependency that is away (its database) before it
#: is dead-lettered: far beyond a restart or a failover. Unscaled seconds.
OUTAGE_BUDGET = 3600
OUTAGE_MAX_DELAY = 60
OUTAGE_HEADER = "x-outage-waited"


class ServiceTask(Task[Any, Any]):
    """Late acks, dead-lettering on final failure, and retries that stay inside the service."""

    Request = "shared.worker.request:DeadLetteringRequest"

    def retry(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Retry to the task's own queue, never the exchange it came from.

        Celery retries to the original exchange and routing key; for an event that is the
        shared ``events`` exchange, which would hand the event to every subscriber again.
        Delays are whole seconds (native delayed delivery rejects sub-second countdowns)
        and scaled by ``retry_delay_scale``.

        A retry the broker would not take (it is away past the publish retries) raises
        the broker's error, not Celery's ``Reject(requeue=False)``, which would
        dead-letter the task for the outage: the message is requeued instead (and an
        inline handler's event), bounded by the queue's delivery limit. A published
        retry is noted for the parent (``shared.worker.progress``).
        """
        if eta is None:
            delay = self.default_retry_delay if countdown is None else countdown
            countdown = max(1, math.ceil(delay * self.app.conf.retry_delay_scale))
        options["queue"] = self._own_queue()
        try:
            sent = super().retry(args, kwargs, exc, False, eta, countdown, max_retries, **options)
        except Reject as rejected:
            reason = rejected.reason  # type: ignore[attr-defined]  # not in celery-types
            if isinstance(reason, BROKER_AWAY):
                raise reason from exc
            raise
        retried(_running(self.request.id))
        if throw:
            raise sent
        return sent

    def retry_after_outage(
        self, exc: Exception, delay: float, headers: dict[str, Any] | None = None
    ) -> Retry:
        """Retry once a dependency is back, without spending the task's ``max_retries``.

        Those bound the task's own failures (an SMTP server refusing, a bug), not how long
        the database takes to restart: the new message keeps ``retries`` and counts the
        wait in its own header instead. Delays start at ``delay`` and double up to a
        minute; past ``OUTAGE_BUDGET`` seconds waited in all, ``exc`` is raised (and
        dead-lettered). ``headers`` are added to the retry: what the task must know when it
        runs again that only the broker can keep meanwhile. Raises ``Retry`` like ``retry``.
        """
        request = self.request
        waited = (request.headers or {}).get(OUTAGE_HEADER)
        waited = waited if type(waited) is int else 0
        if waited >= OUTAGE_BUDGET:
            raise exc
        step = min(OUTAGE_MAX_DELAY, max(delay, waited))
        countdown = max(1, math.ceil(step * self.app.conf.retry_delay_scale))
        signature = self.signature_from_request(
            request,
            countdown=countdown,
            retries=request.retries,
            # Without x-death: Celery drops it from every retry too. A second pass through
            # the same delay queue with it is a dead-letter cycle to RabbitMQ, which then
            # holds the message at that queue's head for good, and every retry behind it.
            headers={
                **_without_x_death(request.headers),
                **(headers or {}),
                OUTAGE_HEADER: waited + step,
            },
            queue=self._own_queue(),
        )
        signature.apply_async()
        retried(_running(request.id))
        raise Retry(exc=exc, when=countdown, sig=signature)

    def apply_async(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> Any:
        """Celery's, refusing time limits the prefork pool would not enforce as asked."""
        check_time_limits(self, options)
        return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow,
                                   **options)  # fmt: skip

    def _own_queue(self) -> str:
        queue: str = self.app.amqp.router.route({}, self.name)["queue"].name
        return queue


def check_time_limits(task: Task[Any, Any], options: dict[str, Any]) -> None:
    """ValueError for a call whose hard time limit is not above its soft one.

    The prefork pool arms the hard limit only when the soft one fires: a hard limit at
    or below the soft one is silently stretched to it (Celery ignores it). The limits are
    the call's, else the task's, else the app's, as the worker will apply them.
    """
    conf = task.app.conf
    hard = options.get("time_limit") or task.time_limit or conf.task_time_limit
    soft = options.get("soft_time_limit") or task.soft_time_limit or conf.task_soft_time_limit
    if hard and soft and soft >= hard:
        raise ValueError(
            f"{task.name}: time_limit={hard} must be above soft_time_limit={soft} (the pool "
            "arms the hard limit only when the soft one fires)"
        )


def _running(task_id: str | None) -> str:
    """The id of the task a worker runs (only a direct call, which cannot retry, has none)."""
    if task_id is None:
        raise RuntimeError("a task called directly cannot retry")
    return task_id


def _without_x_death(headers: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (headers or {}).items() if k not in X_DEATH_HEADERS}


class DeclareTopology(bootsteps.StartStopStep):
    """Declare the service's DLX/DLQ and queues when the worker connects (or reconnects)."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, c: Any) -> None:
        channel = c.connection.channel()
        try:
            declare_service(channel, c.app.conf.service_topology)
        finally:
            channel.close()


class ServiceCelery(Celery):
    """Celery whose publishes join the thread's ``shared.worker.confirms.confirmed_batch``, with
    task messages from ``shared.worker.utc.UtcAMQP``."""

    amqp_cls = "shared.worker.utc:UtcAMQP"

    def producer_or_acquire(  # type: ignore[override]  # celery-types: FallbackContext only
        self, producer: Any = None
    ) -> AbstractContextManager[Any]:
        batch = current_batch(self) if producer is None else None
        if batch is not None:
            return nullcontext(batch.producer)
        return super().producer_or_acquire(producer)


def create_celery_app(
    topo: ServiceTopology, settings: Settings, own_queues: dict[str, str]
) -> Celery:
    """A Celery app bound to the service's own queues, schema and control namespace."""
    app = ServiceCelery(topo.name, task_cls=ServiceTask)
    route = router_for(topo, own_queues)

    def route_stamped(*args: Any, **kwargs: Any) -> dict[str, Any]:
        """Every publish carries the service's broker user (``shared.worker.allowed``). A name the
        router does not know goes to the default queue, as Celery would send it: an answer
        with only ``user_id`` would leave it with no queue at all."""
        destination = route(*args, **kwargs) or {"queue": topo.tasks_queue}
        return stamped(destination, broker_user(app.conf.broker_url))

    app.conf.update(
        **_broker_and_results(topo, settings),
        **_tasks(topo, settings),
        task_routes=(route_stamped,),
    )
    app.steps["consumer"].add(DeclareTopology)
    app.steps["worker"].add(FinishPoolWrites)
    install_startup_check(app)
    if settings.log_format == "json":
        use_json_logs(topo.name)
    if not settings.task_log_lines:
        quiet_task_lines()
    install_tracing(topo.name)
    return app


def _broker_and_results(topo: ServiceTopology, settings: Settings) -> dict[str, Any]:
    """Confirmed publishes, and results in the service's schema of PostgreSQL."""
    return dict(
        broker_url=settings.amqp_url,
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        broker_channel_error_retry=True,
        result_backend=f"shared.worker.results:PostgresBackend+{settings.database_url}",
        database_table_schemas={"task": topo.name, "group": topo.name},
        database_engine_options={"pool_pre_ping": True, "connect_args": {"options": UTC_SESSION}},
        result_extended=True,
        result_expires=settings.result_expires,
        result_synchronous_commit=settings.result_synchronous_commit,
        result_write_delay=settings.result_write_delay,
        chord_timeout=settings.chord_timeout,
        result_backend_always_retry=True,
        result_backend_max_retries=10,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
    )


def _tasks(topo: ServiceTopology, settings: Settings) -> dict[str, Any]:
    """Late acks and dead letters, the service's own queues, exchanges and names."""
    return dict(
        timezone="Asia/Seoul",
        enable_utc=True,
        task_track_started=True,
        task_time_limit=settings.task_time_limit,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure=False,
        task_acks_on_timeout=True,
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        task_queues=topo.work_queues(),
        task_default_queue=topo.tasks_queue,
        task_default_exchange=topo.name,
        task_default_exchange_type="topic",
        task_default_routing_key=topo.tasks_queue,
        task_create_missing_queues=False,
        control_exchange=topo.name,
        event_exchange=f"{topo.name}.celeryev",
        operator_user=settings.operator_user,
        worker_consumer="shared.worker.delayed:Consumer",  # operator-declared delay levels
        worker_prefetch_multiplier=4,
        retry_delay_scale=settings.retry_delay_scale,
        service_topology=topo,
        broker_consumer_timeout=settings.broker_consumer_timeout,
    )
