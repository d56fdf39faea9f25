"""Times in task messages as UTC, whatever zone the app or the caller wrote them in."""

from datetime import UTC, datetime
from typing import Any

from celery.app.amqp import AMQP


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
