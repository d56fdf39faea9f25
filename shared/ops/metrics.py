"""A Prometheus endpoint per service worker:
``celery -A services.X.app worker -I shared.ops.metrics``.

Counters come from Celery's task signals, which fire in the process that ran the task: a
prefork child. prometheus_client's multiprocess mode (files in ``PROMETHEUS_MULTIPROC_DIR``)
lets the worker's main process serve what every child counted; the mode is chosen when
prometheus_client is imported, and the ``celery`` command imports it before this module
(Flower's CLI plugin does), hence the directory is set and the mode chosen again here,
before any metric of ours has a value. Each worker counts in a directory of its own (under
``PROMETHEUS_MULTIPROC_DIR`` when that is set): two workers given the same directory would
serve, and clear, each other's counts.

What the broker knows (queue depth, consumers, dead letters waiting in a DLQ) is not served
here: RabbitMQ's own exporter (``rabbitmq_prometheus``) serves it once per broker, where
every worker of a service would report the same queue again. What only PostgreSQL knows is
served by every worker of the service, the same value from each: the outbox's lag and
whether anyone holds the service's beat lock; read them with ``max by (service)``.
``eventful_dead_letters_total`` counts every dead letter the worker publishes, whether a
task failed, rejected its message, or no task could run it.

``METRICS_PORT`` taken (a second worker of the service on this host): the worker serves on a
free port instead and says so in its log; with ``METRICS_TARGETS_DIR`` set it writes its
address there for Prometheus's ``file_sd_configs`` (what ``make run`` does), and removes it
when it stops.
"""

import errno
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_revoked,
    task_success,
    worker_init,
    worker_process_shutdown,
    worker_shutdown,
)
from kombu.utils.imports import symbol_by_name
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    values,
)
from prometheus_client import start_http_server as serve
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from shared.core.settings import get_settings
from shared.ops.outbox import outbox_lag
from shared.worker.beat import SingleBeatScheduler, lock_is_held
from shared.worker.deadletter import dead_lettered
from shared.worker.pending_rows import row_refused

logger = logging.getLogger(__name__)
#: This worker's own directory; its pool processes count in it, its main process serves it.
DIRECTORY = tempfile.mkdtemp(
    prefix="eventful-metrics-", dir=get_settings().metrics.prometheus_multiproc_dir
)
# prometheus_client's multiprocess values learn their directory from this variable alone
# (no argument takes it): the one write of the environment in the platform, for the library,
# before any metric of ours has a value; pool processes, forked from this one, inherit it.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = DIRECTORY
values.ValueClass = values.get_value_class()


TASKS = Counter("eventful_tasks", "Tasks finished, by state", ["service", "task", "state"])
RETRIES = Counter("eventful_task_retries", "Retries scheduled", ["service", "task"])
DEAD = Counter("eventful_dead_letters", "Messages dead-lettered, by reason", ["service", "reason"])
REFUSED = Counter(
    "eventful_result_rows_refused",
    "Result rows PostgreSQL refused alone (a value too long, a NUL character), dropped",
    ["service"],
)
DURATION = Histogram(
    "eventful_task_duration_seconds", "Time a task ran, per try", ["service", "task"]
)
_started_at: dict[str, float] = {}


def _labels(sender: Task[Any, Any]) -> tuple[str, str]:
    return str(sender.app.main), sender.name


@task_success.connect
def _succeeded(sender: Task[Any, Any], **kw: Any) -> None:
    TASKS.labels(*_labels(sender), "succeeded").inc()


@task_failure.connect
def _failed(sender: Task[Any, Any], **kw: Any) -> None:
    TASKS.labels(*_labels(sender), "failed").inc()


@task_prerun.connect
def _started(task_id: str, **kw: Any) -> None:
    _started_at[task_id] = time.monotonic()


@task_postrun.connect
def _finished(sender: Task[Any, Any], task_id: str, **kw: Any) -> None:
    started = _started_at.pop(task_id, None)
    if started is not None:
        DURATION.labels(*_labels(sender)).observe(time.monotonic() - started)


@dead_lettered.connect
def _dead(sender: object = None, *, service: str, reason: str, **kw: Any) -> None:
    DEAD.labels(service, reason).inc()


@row_refused.connect
def _refused(sender: object = None, *, service: str, **kw: Any) -> None:
    REFUSED.labels(service).inc()


@task_retry.connect
def _retried(sender: Task[Any, Any], **kw: Any) -> None:
    svc, task = _labels(sender)
    TASKS.labels(svc, task, "retried").inc()
    RETRIES.labels(svc, task).inc()


@task_revoked.connect
def _revoked(sender: Task[Any, Any] | None = None, request: Any = None, **kw: Any) -> None:
    TASKS.labels(sender.app.main if sender else "", getattr(request, "name", ""), "revoked").inc()


class DatabaseStateCollector:
    """Gauges read from PostgreSQL at scrape time: the outbox's lag and parked rows, the beat
    lock's holder."""

    def __init__(self, app: Celery, database_url: str) -> None:
        self.service = app.main
        self.has_beat = bool(app.conf.beat_schedule) and _is_single_beat(app)
        self.engine = create_engine(database_url, poolclass=NullPool)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        unpublished = GaugeMetricFamily(
            "eventful_outbox_unpublished",
            "Outbox rows the relay has yet to publish (parked rows not counted)",
            labels=["service"],
        )
        age = GaugeMetricFamily(
            "eventful_outbox_oldest_age_seconds",
            "Age of the oldest unpublished row",
            labels=["service"],
        )
        parked = GaugeMetricFamily(
            "eventful_outbox_parked",
            "Outbox rows the relay gave up on, waiting for an operator (`eventful outbox status`)",
            labels=["service"],
        )
        beat = GaugeMetricFamily(
            "eventful_beat_lock_held", "1 if a beat holds the service's lock", labels=["service"]
        )
        try:
            for lag in outbox_lag(self.engine, [self.service]):
                unpublished.add_metric([lag.service], lag.unpublished)
                age.add_metric([lag.service], lag.oldest_age_seconds or 0.0)
                parked.add_metric([lag.service], len(lag.parked))
            if self.has_beat:
                with self.engine.connect() as conn:
                    beat.add_metric([self.service], int(lock_is_held(conn, self.service)))
        except Exception:
            logger.exception("metrics: could not read the outbox or the beat lock")
        yield from (unpublished, age, parked, beat)


def _is_single_beat(app: Celery) -> bool:
    scheduler = symbol_by_name(app.conf.beat_scheduler)
    return isinstance(scheduler, type) and issubclass(scheduler, SingleBeatScheduler)


def serve_metrics(registry: CollectorRegistry, port: int, addr: str) -> int:
    """Serve ``registry`` on ``port``, or on a free port if ``port`` is taken; the port."""
    try:
        server, _ = serve(port, addr=addr, registry=registry)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        server, _ = serve(0, addr=addr, registry=registry)
        logger.warning(
            "metrics: port %s is in use (another worker on this host?); serving on port %s",
            port,
            server.server_port,
        )
    return server.server_port


_target_file: list[Path] = []


def _register(directory: Path, addr: str, port: int, service: str, node: str) -> None:
    """Write this worker's address where Prometheus's file_sd_configs reads it (atomically)."""
    host = socket.gethostname() if addr in ("0.0.0.0", "::", "") else addr
    target = [{"targets": [f"{host}:{port}"], "labels": {"service": service, "worker": node}}]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{service}-{host}-{port}.json"
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(target))
    partial.replace(path)
    _target_file.append(path)


@worker_init.connect
def _serve(sender: Any, **kw: Any) -> None:
    """In the worker's main process: serve, and say where."""
    settings = get_settings()
    metrics = settings.metrics
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=DIRECTORY)
    registry.register(DatabaseStateCollector(sender.app, settings.database_url))
    port = serve_metrics(registry, metrics.metrics_port, metrics.metrics_addr)
    service = sender.app.main
    if metrics.metrics_targets_dir is not None:
        node = getattr(sender, "hostname", service)
        _register(metrics.metrics_targets_dir, metrics.metrics_addr, port, service, node)
    logger.info("metrics of %s on http://%s:%s/metrics", service, metrics.metrics_addr, port)


@worker_shutdown.connect
def _unregister(**kw: Any) -> None:
    for path in _target_file:
        path.unlink(missing_ok=True)
    shutil.rmtree(DIRECTORY, ignore_errors=True)


@worker_process_shutdown.connect
def _child_gone(pid: int | None = None, **kw: Any) -> None:
    multiprocess.mark_process_dead(pid or os.getpid(), path=DIRECTORY)
