"""Retry policies: a named, validated value kept beside the handler it governs.

Celery takes retry options as loose task keyword arguments: ``max_retires=5`` is accepted
and silently ignored. A ``RetryPolicy`` is built when its module is imported, so a
misspelt or impossible option fails there, and the startup check (``shared.worker.check``)
reads the schedule it implies from the same object (the task's ``retry_policy``). The
field names are Celery's, so a Celery user knows them.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When a task is retried, how often, and how long it waits between attempts."""

    #: Exceptions retried automatically; anything else fails the task (and dead-letters it).
    autoretry_for: tuple[type[BaseException], ...] = ()
    max_retries: int = 3
    #: Seconds before a retry when there is no backoff (and for an explicit ``task.retry``).
    default_retry_delay: int = 180
    #: Exponential backoff factor (seconds): retry n waits ``factor * 2**n``; 0 for none.
    retry_backoff: int = 0
    retry_backoff_max: int = 600
    #: Wait a random time up to the backoff delay instead of the delay itself.
    retry_jitter: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.autoretry_for, tuple) or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in self.autoretry_for
        ):
            raise TypeError(
                f"autoretry_for must be a tuple of exception classes, not {self.autoretry_for!r}"
            )
        for name in ("max_retries", "default_retry_delay", "retry_backoff", "retry_backoff_max"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a whole number of at least 0, not {value!r}")
        if type(self.retry_jitter) is not bool:
            raise TypeError(f"retry_jitter must be True or False, not {self.retry_jitter!r}")

    def task_options(self) -> dict[str, Any]:
        """The policy as Celery's task options."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def delays(self) -> list[int]:
        """The longest wait before each retry, in unscaled seconds (jitter only shortens)."""
        if not self.retry_backoff:
            return [self.default_retry_delay] * self.max_retries
        return [
            min(self.retry_backoff_max, self.retry_backoff * 2**n) for n in range(self.max_retries)
        ]


#: Task options a handler may set besides its retry policy; anything else is a mistake.
TASK_OPTIONS = frozenset(
    {"soft_time_limit", "time_limit", "on_failure", "ignore_result", "rate_limit", "expires"}
)


def checked_task_options(owner: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if every one is a task option the platform passes on; else TypeError."""
    retry_fields = {f.name for f in dataclasses.fields(RetryPolicy)}
    for name in options:
        if name in retry_fields:
            raise TypeError(f"{owner}: {name} belongs in retry=RetryPolicy(...)")
        if name not in TASK_OPTIONS:
            known = ", ".join(sorted(TASK_OPTIONS))
            raise TypeError(f"{owner}: unknown task option {name!r} (known: {known})")
    return options
