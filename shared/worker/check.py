"""The startup check: settings that cannot work together, found before a worker starts.

Each task's retry schedule, time limits and pool are compared with what bounds them
elsewhere: the result's lifetime (``result_expires``), the broker's ``consumer_timeout``
(a delivery unacknowledged for longer closes the channel and the message runs again),
the pool (only prefork enforces time limits), the queue's delivery limit, and the beat
schedule (a standby beat takes over within ``max_interval``). A fatal finding stops the
worker (``StartupCheck``) and makes ``eventful check`` exit 1. A debugging worker on the
solo pool asks for its unenforced time limits by name (``--unenforced-time-limits``): a
warning then, not a refusal.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click
from celery import Celery, bootsteps
from celery.exceptions import ImproperlyConfigured
from celery.schedules import schedule as every

from shared.contracts.models import Command
from shared.core.retry import RetryPolicy

logger = logging.getLogger(__name__)
#: Pools that accept ``soft_time_limit``/``time_limit`` and never enforce them.
IGNORE_TIME_LIMITS = {"threads", "solo", "gevent", "eventlet"}
#: ``celery ... worker --pool solo --unenforced-time-limits``: the README's debugging worker.
UNENFORCED_TIME_LIMITS = click.Option(
    ("--unenforced-time-limits",),
    is_flag=True,
    default=False,
    help="Start on a pool that ignores time limits (solo, threads), with a warning: debugging.",
)


@dataclass(frozen=True)
class Finding:
    service: str
    task: str
    kind: str
    fatal: bool
    message: str

    def __str__(self) -> str:
        level = "FATAL" if self.fatal else "warning"
        return f"{level} {self.service} {self.task}: {self.message} [{self.kind}]"


def _seconds(value: Any) -> float | None:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) if value is not None else None


def _schedule(task: Any) -> RetryPolicy | None:
    """The policy the task was declared with (``Service``: the same object, as it was
    validated); a task registered on Celery directly has its options read instead. None:
    it retries forever."""
    declared = getattr(task, "retry_policy", None)
    if isinstance(declared, RetryPolicy):
        return declared
    if task.max_retries is None:
        return None
    return RetryPolicy(
        max_retries=int(task.max_retries),
        default_retry_delay=int(task.default_retry_delay),
        retry_backoff=int(getattr(task, "retry_backoff", 0) or 0),
        retry_backoff_max=int(getattr(task, "retry_backoff_max", 600)),
        retry_jitter=bool(getattr(task, "retry_jitter", True)),
    )


def check_app(
    app: Celery, pool: str, consumer_timeout: float, unenforced_limits: bool = False
) -> list[Finding]:
    """Every finding for the service whose Celery app is ``app``, run on ``pool``;
    ``unenforced_limits``: time limits the pool ignores are a warning, not fatal."""
    conf, service = app.conf, app.main
    topology = conf.service_topology
    found: list[Finding] = []

    def find(task: str, kind: str, fatal: bool, message: str) -> None:
        found.append(Finding(service, task, kind, fatal, message))

    limit = topology.work_queue_arguments().get("x-delivery-limit", 0)
    if limit < 2:
        find("*", "delivery-limit", True, f"delivery limit {limit}: one worker restart"
             " dead-letters every message it held")  # fmt: skip
    for name, task in sorted(app.tasks.items()):
        if name.startswith("celery."):
            continue
        hard = _seconds(task.time_limit or conf.task_time_limit)
        soft = _seconds(task.soft_time_limit or conf.task_soft_time_limit)
        if hard and hard >= consumer_timeout:
            find(name, "consumer-timeout", True, f"time limit {hard:g}s is not below the"
                 f" broker's consumer_timeout {consumer_timeout:g}s: the broker closes the"
                 " channel first and the message runs again")  # fmt: skip
        if soft and hard and soft >= hard:
            find(name, "soft-limit", True, f"soft time limit {soft:g}s is not below the hard"
                 f" limit {hard:g}s: the task never gets the chance to clean up")  # fmt: skip
        if pool in IGNORE_TIME_LIMITS and (task.time_limit or task.soft_time_limit):
            find(name, *_unenforced(pool, unenforced_limits))
        _check_retries(name, task, hard, conf, find)
    found += _beat(app)
    return found


def _check_retries(
    name: str, task: Any, hard: float | None, conf: Any, find: Callable[[str, str, bool, str], None]
) -> None:
    """A task retried without end, or whose retries outlive its result."""
    policy = _schedule(task)
    if policy is None:
        find(name, "retries-forever", False, "max_retries None: retried without end")
    elif getattr(task, "autoretry_for", ()):
        delays = sum(policy.delays()) * conf.retry_delay_scale
        waited = delays + (hard or 0) * (policy.max_retries + 1)
        if waited > conf.result_expires:
            fatal = name in Command.registry  # a caller waits on a command's result
            find(name, "retries-outlive-result", fatal, f"its attempts and retries can"
                 f" take {waited:g}s, longer than result_expires {conf.result_expires}s:"
                 " the result is cleaned up while the task still retries")  # fmt: skip


def _unenforced(pool: str, allowed: bool) -> tuple[str, bool, str]:
    if allowed:
        return ("pool-ignores-limits-allowed", False, f"time limits on the {pool} pool are not"
                " enforced (--unenforced-time-limits): a hung task is never cut, no"
                " SoftTimeLimitExceeded is raised; for debugging only")  # fmt: skip
    return ("pool-ignores-limits", True, f"time limits on the {pool} pool, which ignores them:"
            " a hung task is never cut (--unenforced-time-limits to debug on it)")  # fmt: skip


def _beat(app: Celery) -> list[Finding]:
    from shared.worker.beat import SingleBeatScheduler

    takeover = SingleBeatScheduler.max_interval
    found = []
    for entry, spec in sorted((app.conf.beat_schedule or {}).items()):
        task, period = spec["task"], spec["schedule"]
        if task not in app.tasks:
            message = f"beat entry {entry!r} fires a task this app does not have"
            found.append(Finding(app.main, task, "beat-unknown-task", True, message))
        if isinstance(period, every):
            period = period.run_every  # type: ignore[attr-defined]  # not in celery-types
        seconds = _seconds(period) if isinstance(period, (int, float, timedelta)) else None
        if seconds is not None and seconds < takeover:
            message = (
                f"beat entry {entry!r} every {seconds:g}s is shorter than the"
                f" {takeover}s a standby beat needs to take over: firings are lost when"
                " the holder dies"
            )
            found.append(Finding(app.main, task, "beat-takeover", False, message))
    return found


def _pool_name(pool_cls: Any) -> str:
    name = getattr(pool_cls, "__module__", str(pool_cls)).rsplit(".", 1)[-1].split(":")[0]
    return {"thread": "threads"}.get(name, name)


def install(app: Celery) -> None:
    """The check as a step of ``app``'s workers, and the worker option it reads."""
    app.steps["worker"].add(StartupCheck)
    app.user_options["worker"].add(UNENFORCED_TIME_LIMITS)


class StartupCheck(bootsteps.Step):
    """Run the check as the worker starts; refuse to start on a fatal finding."""

    def __init__(self, worker: Any, unenforced_time_limits: bool = False, **kwargs: Any) -> None:
        app = worker.app
        pool, timeout = _pool_name(worker.pool_cls), app.conf.broker_consumer_timeout
        found = check_app(app, pool, timeout, unenforced_time_limits)
        for finding in found:
            (logger.error if finding.fatal else logger.warning)("startup check: %s", finding)
        fatal = [str(f) for f in found if f.fatal]
        if fatal:
            raise ImproperlyConfigured("startup check failed:\n" + "\n".join(fatal))
        super().__init__(worker, **kwargs)
