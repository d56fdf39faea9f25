"""A Prometheus endpoint per service worker:
``celery -A services.X.app worker -I shared.ops.metrics``.

Counters come from Celery's task signals, which fire in the process that ran the task: a
prefork child. prometheus_client's multiprocess mode (a file per process and kind of metric)
lets the worker's main process serve what every child counted. Each worker counts in a
directory of its own, made as this module is imported (under ``PROMETHEUS_MULTIPROC_DIR``
when that is set): two workers given the same directory would serve, and clear, each other's
counts. prometheus_client finds its directory in ``os.environ``, which nothing here writes:
the value class installed below (before any metric of ours has a value) holds the directory
itself, and the pool processes, forked from the main one, inherit it.

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
import threading
import time
from pathlib import Path

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
from prometheus_client.mmap_dict import MmapedDict, mmap_key
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


class _FileValue:
    """One sample's value, in this process's file of its kind under ``DIRECTORY``: what
    prometheus_client's ``values.MultiProcessValue`` does, with the directory given here
    rather than read from ``PROMETHEUS_MULTIPROC_DIR``. A process forked after a value was
    made opens files of its own (named by its pid) and counts from 0, as there."""

    _multiprocess = True
    _lock = threading.Lock()
    _files: dict[str, MmapedDict] = {}
    _pid = os.getpid()

    def __init__(self, typ, metric_name, name, labelnames, labelvalues, help_text,
                 multiprocess_mode="", **kw) -> None:  # fmt: skip
        self._kind = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
        self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)

    def _file(self) -> MmapedDict:
        cls = type(self)
        if cls._pid != os.getpid():
            cls._files, cls._pid = {}, os.getpid()  # the parent's files stay the parent's
        if self._kind not in cls._files:
            path = os.path.join(DIRECTORY, f"{self._kind}_{cls._pid}.db")
            cls._files[self._kind] = MmapedDict(path)
        return cls._files[self._kind]

    def inc(self, amount: float) -> None:
        with self._lock:
            file = self._file()
            file.write_value(self._key, file.read_value(self._key)[0] + amount, 0.0)

    def set(self, value: float, timestamp: float | None = None) -> None:
        with self._lock:
            self._file().write_value(self._key, value, timestamp or 0.0)

    def get(self) -> float:
        with self._lock:
            return self._file().read_value(self._key)[0]

    def set_exemplar(self, exemplar) -> None:  # not kept in multiprocess mode
        return

    def get_exemplar(self) -> None:
        return None


values.ValueClass = _FileValue


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


@row_refused.connect
def _refused(sender=None, service=None, **kw) -> None:
    REFUSED.labels(service).inc()


@task_retry.connect
def _retried(sender=None, request=None, **kw) -> None:
    svc, task = _labels(sender)
    TASKS.labels(svc, task, "retried").inc()
    RETRIES.labels(svc, task).inc()


@task_revoked.connect
def _revoked(sender=None, request=None, **kw) -> None:
    TASKS.labels(sender.app.main if sender else "", getattr(request, "name", ""), "revoked").inc()


class DatabaseStateCollector:
    """Gauges read from PostgreSQL at scrape time: the outbox's lag and parked rows, the beat
    lock's holder."""

    def __init__(self, app, database_url: str) -> None:
        self.service = app.main
        self.has_beat = bool(app.conf.beat_schedule) and _is_single_beat(app)
        self.engine = create_engine(database_url, poolclass=NullPool)

    def collect(self):
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


def _is_single_beat(app) -> bool:
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
def _serve(sender=None, **kw) -> None:
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
def _unregister(**kw) -> None:
    for path in _target_file:
        path.unlink(missing_ok=True)
    shutil.rmtree(DIRECTORY, ignore_errors=True)


@worker_process_shutdown.connect
def _child_gone(pid=None, **kw) -> None:
    multiprocess.mark_process_dead(pid or os.getpid(), path=DIRECTORY)
