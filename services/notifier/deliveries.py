"""The delivery ledger: a send happens at most once per key, and its outcome is recorded.

A delivery's row is committed ``pending`` first (one statement in autocommit, so a
process killed mid-send leaves it for the final-failure report), then claimed (locked:
``SELECT ... FOR UPDATE``) in the same transaction that records its outcome, and the lock
is held while the provider is called. So duplicates of one event or command (redelivery, a publisher
sending the same event three times, a replayed dead letter) serialise on the row: the
first sends and commits ``sent``, the others wait for it and then find ``sent`` and send
nothing.

The crash window: a worker that dies after the provider accepted the message but before
the commit leaves the row as it was, and the redelivered task sends again. We choose that
(at-least-once, a rare duplicate) over committing "sending" first (at-most-once, where the
same crash loses the message for good). The window is the few milliseconds between the
provider's acceptance and our commit; the stable Message-ID / Idempotency-Key lets the
provider or the recipient's client fold such a duplicate.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from contracts import NotificationPayload
from services.notifier.errors import PermanentDeliveryError
from services.notifier.model import deliveries
from shared import Database, Event, max_length

logger = logging.getLogger(__name__)
#: Seconds an accepted send keeps trying to record ``sent`` while the database is away.
RECORD_PATIENCE = 20.0
RECIPIENT_MAX = max_length(NotificationPayload, "recipient")


@dataclass(frozen=True)
class Delivery:
    """One notification to send: its idempotency key and what the events say about it."""

    key: str
    kind: str
    channel: Literal["email", "sms"]
    recipients: tuple[str, ...]
    task_id: str
    caused_by: UUID | None = None

    @classmethod
    def for_event(cls, event: Event, kind: str, channel, recipients, task: Any) -> "Delivery":
        """Keyed by event id + kind: every copy of the event maps to the same delivery."""
        return cls(
            f"{event.id}/{kind}", kind, channel, tuple(recipients), task.request.id, event.id
        )

    @classmethod
    def for_command(cls, kind: str, channel, recipients, task: Any) -> "Delivery":
        """Keyed by the command's task id, which redelivery, retries and replays keep."""
        return cls(f"{task.request.id}/{kind}", kind, channel, tuple(recipients), task.request.id)

    @property
    def recipient(self) -> str:
        return ", ".join(self.recipients)

    @property
    def recipient_summary(self) -> str:
        """``recipient`` within the contract's bound: as many as fit, then how many more."""
        if len(self.recipient) <= RECIPIENT_MAX:
            return self.recipient
        shown: list[str] = []
        for address in self.recipients:
            more = f" (+{len(self.recipients) - len(shown) - 1} more)"
            if len(", ".join([*shown, address])) + len(more) > RECIPIENT_MAX:
                break
            shown.append(address)
        return f"{', '.join(shown)} (+{len(self.recipients) - len(shown)} more)"

    @property
    def message_id(self) -> str:
        """Stable across attempts, so a provider can recognise the same message."""
        return str(uuid5(NAMESPACE_URL, self.key))

    def event_id(self, outcome: str) -> UUID:
        """Stable per outcome, so consumers deduplicate a re-published notification event."""
        return uuid5(NAMESPACE_URL, f"{self.key}/{outcome}")

    def payload(self, error: str | None = None) -> dict[str, Any]:
        return {
            "delivery_id": self.key,
            "kind": self.kind,
            "channel": self.channel,
            "recipient": self.recipient_summary,
            "caused_by": self.caused_by,
            "error": error,
        }


def status_after(exc: BaseException) -> str:
    """What a failed attempt leaves behind; any status but ``sent`` is sent again on retry."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return "interrupted"
    if isinstance(exc, PermanentDeliveryError):
        return "failed"
    return "retrying"


class AcceptedUnrecorded(Exception):
    """The provider took the message and the database could not record it (the cause)."""


class Deliveries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def deliver(self, delivery: Delivery, send: Callable[[], None], accepted: bool = False) -> bool:
        """Send unless already sent; True when this call sent it. A failed attempt is
        recorded (committed) and its exception re-raised for the retry policy. If the
        database goes away during an accepted send, ``sent`` is recorded afresh, or
        ``AcceptedUnrecorded`` says it could not be. ``accepted``: an earlier attempt's
        provider took the message; only its record is missing, nothing is sent."""
        if accepted:
            self._record_sent(delivery, patience=0.0)
            return True
        try:
            self._register(delivery)
            with self.db.transaction() as conn:
                if conn.execute(CLAIM, {"key": delivery.key}).scalar_one() == "sent":
                    return False
                try:
                    send()
                except Exception as exc:
                    failure = exc
                    conn.execute(MARK_UNSENT, _outcome(delivery, status_after(exc), exc))
                else:
                    accepted = True
                    conn.execute(MARK_SENT, _outcome(delivery, "sent"))
                    return True
        except DBAPIError:
            if not accepted:
                raise
            self._record_sent(delivery)
            return True
        raise failure

    def _record_sent(self, delivery: Delivery, patience: float = RECORD_PATIENCE) -> None:
        """The provider accepted the message but the claiming transaction died with its
        connection (a database restart mid-send): without this, the retry sends it again.
        Retried on fresh connections for ``patience`` seconds (below the send's soft time
        limit); a longer outage raises ``AcceptedUnrecorded``, for the retry to carry.
        Two single statements: the row (there already, unless the database lost it) and
        its ``sent``; the update waits for any transaction holding the row."""
        logger.warning("%s: accepted while the database went away; recording it", delivery.key)
        deadline = time.monotonic() + patience
        while True:
            try:
                self._register(delivery)
                self.db.autocommit(MARK_SENT, _outcome(delivery, "sent"))
                return
            except DBAPIError as exc:
                if time.monotonic() >= deadline:
                    raise AcceptedUnrecorded(delivery.key) from exc
                time.sleep(1.0)

    def fail(self, task_id: str, error: str) -> Delivery | None:
        """Mark the task's unsent delivery failed for good; None if it has none."""
        with self.db.transaction() as conn:
            row = conn.execute(
                MARK_FAILED, {"task": task_id, "error": error, "now": datetime.now(UTC)}
            ).first()
        if row is None:
            return None
        recipients = tuple(row.recipient.split(", "))
        return Delivery(row.id, row.kind, row.channel, recipients, task_id, row.caused_by)

    def _register(self, delivery: Delivery) -> None:
        """Commit the delivery's row (``pending``) before the send's transaction locks it.
        A process killed mid-send (its hard time limit) rolls that transaction back, and
        the final-failure hook (``fail``, run by the worker after the kill) must still
        find the delivery it reports as failed. One statement in autocommit: committed
        when it returns, without BEGIN and COMMIT round trips."""
        self.db.autocommit(REGISTER, _pending(delivery))


# The statements, built once: executed with a parameter dict, each is compiled once per
# process and its cache key is not rebuilt per call.

#: The delivery's row as a first attempt finds it (``pending``); a copy's insert is a no-op.
_PENDING = ("id", "kind", "channel", "recipient", "task_id", "caused_by", "created_at")
REGISTER = (
    insert(deliveries)
    .values({**{column: bindparam(column) for column in _PENDING}, "status": "pending"})
    .on_conflict_do_nothing(index_elements=[deliveries.c.id])
)
#: Lock the (registered) row, waiting for a transaction that holds it: its status then.
CLAIM = select(deliveries.c.status).where(deliveries.c.id == bindparam("key")).with_for_update()
_ATTEMPTED = {"attempts": deliveries.c.attempts + 1, "updated_at": bindparam("now")}
MARK_SENT = (
    deliveries.update()
    .where(deliveries.c.id == bindparam("key"))
    .values(status="sent", sent_at=bindparam("now"), **_ATTEMPTED)
)
#: An attempt that did not send: its status (``status_after``) and why.
MARK_UNSENT = (
    deliveries.update()
    .where(deliveries.c.id == bindparam("key"))
    .values(status=bindparam("status"), error=bindparam("error"), **_ATTEMPTED)
)
MARK_FAILED = (
    deliveries.update()
    .where(deliveries.c.task_id == bindparam("task"), deliveries.c.status != "sent")
    .values(status="failed", error=bindparam("error"), updated_at=bindparam("now"))
    .returning(deliveries)
)


def _pending(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.key,
        "kind": delivery.kind,
        "channel": delivery.channel,
        "recipient": delivery.recipient,
        "task_id": delivery.task_id,
        "caused_by": delivery.caused_by,
        "created_at": datetime.now(UTC),
    }


def _outcome(delivery: Delivery, status: str, exc: BaseException | None = None) -> dict[str, Any]:
    outcome = {"key": delivery.key, "status": status, "now": datetime.now(UTC)}
    if exc is not None:
        outcome["error"] = _describe(exc)
    return outcome


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]
