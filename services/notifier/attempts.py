"""One attempt at a delivery, the same for every handler, and what a final failure reports."""

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from contracts import NotificationFailed, NotificationSent
from services.notifier.deliveries import AcceptedUnrecorded, Deliveries, Delivery
from services.notifier.errors import TryLater
from shared import DATABASE_RETRY_DELAY

logger = logging.getLogger(__name__)
#: Header of a retry whose delivery the provider already accepted (its key).
ACCEPTED = "x-accepted-delivery"
SOURCE = "notifier"


class Attempts:
    def __init__(self, deliveries: Deliveries, publish: Callable[[Any], None]) -> None:
        self.deliveries, self.publish = deliveries, publish

    def run(self, task: Any, delivery: Delivery, send: Callable[[], None]) -> str:
        """Send ``delivery`` once: "sent", or "already-sent" for a duplicate.

        ``TryLater`` (the provider's own "come back later", with its Retry-After) and an
        interrupted send (soft time limit) retry by hand with ``task.retry``; transient
        errors propagate to ``autoretry_for``; permanent ones fail the task, which
        dead-letters it. ``notification.sent`` is published after the commit, and again
        for a duplicate (same event id), so a crash between the two cannot lose it.
        """
        request = task.request
        logger.info(
            "%s[%s] retries=%s: %s to %d recipient(s)",
            task.name, request.id, request.retries, delivery.key, len(delivery.recipients),
        )  # fmt: skip
        accepted = (request.headers or {}).get(ACCEPTED) == delivery.key
        try:
            sent_now = self.deliveries.deliver(delivery, send, accepted=accepted)
        except AcceptedUnrecorded as exc:
            # The database is away for longer than a send may wait: the retry message,
            # confirmed by the broker, keeps what the database could not, and only records.
            outage = exc.__cause__ or exc
            raise task.retry_after_outage(
                outage, DATABASE_RETRY_DELAY, headers={ACCEPTED: delivery.key}
            ) from None
        except TryLater as exc:
            raise task.retry(exc=exc, countdown=exc.retry_after) from None
        except SoftTimeLimitExceeded as exc:
            raise task.retry(exc=exc) from None
        sent = NotificationSent(
            id=delivery.event_id("sent"), source=SOURCE, payload=delivery.payload()
        )
        self.publish(sent)
        return "sent" if sent_now else "already-sent"

    def failed(self, task_id: str, exc: BaseException) -> None:
        """The task failed for good (its message is on its way to the DLQ): mark the
        delivery failed and publish ``notification.failed``."""
        error = f"{type(exc).__name__}: {exc}"[:1000]
        delivery = self.deliveries.fail(task_id, error)
        if delivery is None:
            logger.error("task %s failed with no unsent delivery to report: %s", task_id, error)
            return
        failed = NotificationFailed(
            id=delivery.event_id("failed"), source=SOURCE, payload=delivery.payload(error)
        )
        self.publish(failed)
