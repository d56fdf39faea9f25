"""A Prometheus endpoint per service worker: ``celery -A services.X.app worker -I shared.metrics``.

Counters come from Celery's task signals, which fire in the process that ran the task: a
prefork child. prometheus_client's multiprocess mode (files in ``PROMETHEUS_MULTIPROC_DIR``)
lets the worker's main process serve what every child counted; the mode is chosen when
prometheus_client is imported, and the ``celery`` command imports it before this module
(Flower's CLI plugin does), hence the directory is set and the mode chosen again here,
before any metric of ours has a value.

Gauges are read when scraped, with the service's own credentials (no management rights
needed): the ready messages and consumers of its queues and DLQ (passive declares) and its
outbox's lag (when it has one). ``eventful_dead_letters_total`` counts every dead letter
the worker publishes, whether a task failed or no task could run the message.
"""

import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="eventful-metrics-"))

from celery.signals import (  # noqa: E402
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_revoked,
    task_success,
    worker_init,
    worker_process_shutdown,
)
from kombu import Connection  # noqa: E402
from prometheus_client import (  # noqa: E402
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    values,
)
from prometheus_client import start_http_server as serve  # noqa: E402
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from pydantic import Field  # noqa: E402
from pydantic_settings import BaseSettings, SettingsConfigDict  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from shared.deadletter import dead_lettered  # noqa: E402
from shared.ops.outbox import outbox_lag  # noqa: E402
from shared.settings import get_settings  # noqa: E402
from shared.topology import ServiceTopology, service  # noqa: E402

logger = logging.getLogger(__name__)
values.ValueClass = values.get_value_class()


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    metrics_port: int = Field(9808, description="Port of this worker's /metrics endpoint.")
    metrics_addr: str = Field(
        "127.0.0.1", description="Address /metrics listens on (0.0.0.0 for every interface)."
    )


TASKS = Counter("eventful_tasks", "Tasks finished, by state", ["service", "task", "state"])
RETRIES = Counter("eventful_task_retries", "Retries scheduled", ["service", "task"])
DEAD = Counter("eventful_dead_letters", "Messages dead-lettered, by reason", ["service", "reason"])
DURATION = Histogram(
    "eventful_task_duration_seconds", "Time a task ran, per try", ["service", "task"]
)
_started_at: dict[str, float] = {}


def _labels(sender) -> tuple[str, str]:
    return sender.app.main, sender.name


@task_success.connect
def _succeeded(sender=None, **kw) -> None:
    TASKS.labels(*_labels(sender), "succeeded").inc()


@task_failure.connect
def _failed(sender=None, exception=None, **kw) -> None:
    TASKS.labels(*_labels(sender), "failed").inc()


@task_prerun.connect
def _started(task_id=None, **kw) -> None:
    _started_at[task_id] = time.monotonic()


@task_postrun.connect
def _finished(sender=None, task_id=None, **kw) -> None:
    started = _started_at.pop(task_id, None)
    if started is not None:
        DURATION.labels(*_labels(sender)).observe(time.monotonic() - started)


@dead_lettered.connect
def _dead(sender=None, service=None, reason=None, **kw) -> None:
    DEAD.labels(service, reason).inc()


@task_retry.connect
def _retried(sender=None, request=None, **kw) -> None:
    svc, task = _labels(sender)
    TASKS.labels(svc, task, "retried").inc()
    RETRIES.labels(svc, task).inc()


@task_revoked.connect
def _revoked(sender=None, request=None, **kw) -> None:
    TASKS.labels(sender.app.main if sender else "", getattr(request, "name", ""), "revoked").inc()


class QueueAndOutboxCollector:
    """Gauges read at scrape time: queue and DLQ depth from the broker, outbox lag."""

    def __init__(self, topo: ServiceTopology, amqp_url: str, database_url: str) -> None:
        self.topo, self.amqp_url = topo, amqp_url
        self.engine = create_engine(database_url, poolclass=NullPool)

    def collect(self):
        ready = GaugeMetricFamily(
            "eventful_queue_messages_ready", "Ready messages", labels=["queue"]
        )
        consumers = GaugeMetricFamily("eventful_queue_consumers", "Consumers", labels=["queue"])
        dlq = GaugeMetricFamily("eventful_dlq_messages", "Dead letters", labels=["service"])
        up = GaugeMetricFamily("eventful_broker_up", "1 if the broker answered this scrape")
        try:
            with Connection(self.amqp_url, connect_timeout=5) as conn:
                channel = conn.channel()
                for name in [q.name for q in self.topo.work_queues()] + [self.topo.dlq]:
                    ok = channel.queue_declare(name, passive=True)
                    ready.add_metric([name], ok.message_count)
                    consumers.add_metric([name], ok.consumer_count)
                    if name == self.topo.dlq:
                        dlq.add_metric([self.topo.name], ok.message_count)
            up.add_metric([], 1)
        except Exception:
            logger.exception("metrics: could not read queue depths")
            up.add_metric([], 0)
        yield from (ready, consumers, dlq, up)
        yield from self._outbox()

    def _outbox(self):
        unpublished = GaugeMetricFamily(
            "eventful_outbox_unpublished", "Outbox rows not yet published", labels=["service"]
        )
        age = GaugeMetricFamily(
            "eventful_outbox_oldest_age_seconds",
            "Age of the oldest unpublished row",
            labels=["service"],
        )
        try:
            for lag in outbox_lag(self.engine, [self.topo.name]):
                unpublished.add_metric([lag.service], lag.unpublished)
                age.add_metric([lag.service], lag.oldest_age_seconds or 0.0)
        except Exception:
            logger.exception("metrics: could not read the outbox")
        yield from (unpublished, age)


@worker_init.connect
def _serve(sender=None, **kw) -> None:
    """In the worker's main process: clear counts of a previous run, then serve."""
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()
    settings, metrics = get_settings(), MetricsSettings()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    topo = service(sender.app.main)
    registry.register(QueueAndOutboxCollector(topo, settings.amqp_url, settings.database_url))
    serve(metrics.metrics_port, addr=metrics.metrics_addr, registry=registry)
    logger.info(
        "metrics of %s on http://%s:%s/metrics",
        topo.name,
        metrics.metrics_addr,
        metrics.metrics_port,
    )


@worker_process_shutdown.connect
def _child_gone(pid=None, **kw) -> None:
    multiprocess.mark_process_dead(pid or os.getpid())
