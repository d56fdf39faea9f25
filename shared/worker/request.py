"""A task request that settles its own message when the task fails for good.

Celery acks a failed task's message (or rejects it without a reason). This request
dead-letters it instead, with its reasons (``shared.worker.deadletter``), except when the
failure is not the message's: a lost delivery (the broker redelivers it), the broker away
(requeued), a result the database could not store (run again once it is back), a hard
time limit after the task's retry was published (the retry carries it on).
"""

import logging
from datetime import UTC, datetime
from typing import Any

from billiard.einfo import ExceptionWithTraceback  # type: ignore[attr-defined]  # not in celery-types
from celery.exceptions import BackendStoreError, Retry, TimeLimitExceeded
from celery.worker.request import Request
from celery.worker.state import task_ready

from shared.worker.app import BROKER_AWAY, ServiceTask
from shared.worker.deadletter import is_final, reason_for, settle_dead
from shared.worker.progress import RETRIED, killed

logger = logging.getLogger(__name__)

#: First delay before a task whose result could not be stored runs again (as service.py's).
RESULT_OUTAGE_DELAY = 5
#: The dead-letter reason of a message whose ``expires`` passed before it could run.
EXPIRED = "expired"


class TaskExpired(Exception):
    """The message's ``expires`` passed before a worker could run it."""


class DeadLetteringRequest(Request):
    """A task request whose final failure dead-letters the message with its reasons."""

    # Celery's Request sets these; celery-types does not declare them.
    _message: Any
    _already_revoked: bool
    _request_dict: dict[str, Any]

    def maybe_expire(self) -> bool:  # type: ignore[override]  # celery-types: Literal[True] | None
        """Expired, without adding the id to the worker's revoked set: the message is
        dead-lettered (``_announce_revoked``), and its replay must run, not be discarded."""
        return bool(self.expires and datetime.now(self.expires.tzinfo or UTC) > self.expires)

    def expired(self) -> TaskExpired:
        """Why an expired message was not run (its dead letter's exception)."""
        assert self.expires is not None  # only asked of an expired request
        at = self.expires.astimezone(UTC).isoformat()  # stored data is UTC, whatever was sent
        return TaskExpired(f"expired at {at} before it could run")

    def _announce_revoked(
        self, reason: str, terminated: bool, signum: int | None, expired: bool
    ) -> None:
        """Celery acks an expired message away; keep it in the DLQ with reason ``expired``."""
        if expired and not self.acknowledged:
            if settle_dead(self.app, self._message, reason=EXPIRED, exc=self.expired()):
                self.acknowledge()
            else:
                self.reject(requeue=False)
        super()._announce_revoked(reason, terminated, signum, expired)  # type: ignore[misc]  # not in celery-types

    #: Settled after its hard time limit by ``_settle_killed``: Celery's timeout handling
    #: (FAILURE row, ``on_failure``, ack) is not this task's outcome.
    _settled_killed = False

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, TimeLimitExceeded) and self._settle_killed(exc):
            return None
        if is_final(exc) and not self.acknowledged:
            if _delivery_gone(self._message):
                # The broker lost the consumer's channel (a crash, often the very cause of
                # ``exc``): it has requeued the message and will deliver it again. A
                # dead-letter copy now would put it in two places.
                logger.warning("%s[%s] failed after its delivery was lost, it will run again:"
                               " %r", self.task_name, self.id, exc)  # fmt: skip
                task_ready(self)
                return None
            if isinstance(exc, BROKER_AWAY):
                # The broker did not answer the task (crashed, partitioned): not the
                # message's fault. Back to its queue, at most ``x-delivery-limit`` times;
                # if the connection is gone the broker requeues it by itself. A copy in
                # the DLQ would be published once the broker is back, beside the
                # redelivered original.
                logger.warning("%s[%s]: broker unavailable, requeued: %r",
                               self.task_name, self.id, exc)  # fmt: skip
                task_ready(self)
                self.reject(requeue=True)
                return None
        if isinstance(exc, BackendStoreError) and self._retry_after_outage(exc):
            return None
        if is_final(exc) and not self.acknowledged and not self._already_revoked:
            copied = settle_dead(
                self.app,
                self._message,
                reason=reason_for(exc),
                exc=exc,
                traceback=exc_info.traceback,
            )
            # Settle now; the base class then records FAILURE and its ack/reject is a no-op.
            if copied:
                self.acknowledge()
            else:
                self.reject(requeue=False)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft or not self._settled_killed:
            super().on_timeout(soft, timeout)

    def _settle_killed(self, exc: TimeLimitExceeded) -> bool:
        """The hard time limit: kill the pool process first (nothing it does afterwards,
        a retry, a commit, goes unseen), then settle by what it had done
        (``shared.worker.progress``). A retry it had published carries the task on: the message is
        acked, not also dead-lettered. An entry task settles each of its handlers
        (``settle_killed``). Otherwise False: dead-lettered ``time-limit``, as any
        final failure. Celery calls this before it kills the process itself."""
        if self.acknowledged or not self.worker_pid:
            return False
        record = killed(self.worker_pid, self.id)  # type: ignore[arg-type]  # an int, not str
        settle = getattr(self.task, "settle_killed", None)
        if settle is not None:
            try:
                settle(self, record, exc)
            except Exception:
                logger.exception(
                    "%s[%s]: handlers not settled after the hard limit; the event is dead-lettered",
                    self.task_name,
                    self.id,
                )
                return False
        elif record is None or (record.task, record.state) != (self.id, RETRIED):
            return False
        else:
            logger.warning("%s[%s]: hard time limit after its retry was published: the retry"
                           " carries it on", self.task_name, self.id)  # fmt: skip
        self._settled_killed = True
        task_ready(self)
        self.acknowledge()
        return True

    def _retry_after_outage(self, exc: BackendStoreError) -> bool:
        """The task ran but its result could not be stored (its database is away): run it
        again once the database is back, like a handler's own database errors, rather than
        dead-letter work that was done (tasks run at least once, so they are idempotent).
        False when the outage budget is spent or the retry cannot be published."""
        task = self.task
        if not isinstance(task, ServiceTask):  # registered on Celery directly: no such retry
            return False
        task.push_request(dict(self._request_dict), args=self.args, kwargs=self.kwargs)
        try:
            task.retry_after_outage(exc, RESULT_OUTAGE_DELAY)
        except Retry as retry:
            logger.warning("%s[%s]: result not stored, database away; again in %s s",
                           self.task_name, self.id, retry.when)  # fmt: skip
        except Exception:
            logger.exception("%s[%s]: could not schedule its run after the outage",
                             self.task_name, self.id)  # fmt: skip
            return False
        finally:
            task.pop_request()
        self.acknowledge()
        task_ready(self)
        return True


def _delivery_gone(message: Any) -> bool:
    """The channel ``message`` came on is closed: it can be neither acked nor copied alone."""
    channel = getattr(message, "channel", None)
    return channel is not None and (
        not getattr(channel, "is_open", True) or getattr(channel, "connection", 1) is None
    )
