"""Every message that cannot be processed ends in its service's DLQ, carrying why.

Native dead-lettering (``x-dead-letter-exchange``) records only ``x-death``. So the worker
publishes a copy of the dead message (body and properties untouched) to the service's DLX
with failure headers, waits for the broker's confirm, and only then acks the original.
If that copy cannot be published, the original is rejected without requeue and native
dead-lettering still keeps it: the reason is lost, the message is not.

Two places feed this: ``DeadLetteringRequest`` (a task that failed for good) and
``DeadLetteringConsumer`` (messages Celery would otherwise ack away or reject silently:
undecodable bodies, no task header, unknown task names, disallowed content types).
"""

import logging
import re
import traceback as tb
from contextlib import suppress
from datetime import UTC, datetime

from billiard.einfo import ExceptionWithTraceback
from celery.exceptions import (
    BackendStoreError,
    Ignore,
    InvalidTaskError,
    Reject,
    Retry,
    TimeLimitExceeded,
    WorkerLostError,
)
from celery.utils.dispatch import Signal
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from celery.worker.state import task_ready
from kombu.exceptions import ContentDisallowed, DecodeError
from vine import promise

from shared.contracts.evolution import UnsupportedVersion
from shared.core.topology import service
from shared.core.tracing import record_dead_letter
from shared.worker.allowed import ORIGINAL_USER, check_allowed, publisher
from shared.worker.app import BROKER_AWAY, PUBLISH_RETRY_POLICY
from shared.worker.dead_results import record as record_result
from shared.worker.frames import check_properties, install, note
from shared.worker.intake import received, translate
from shared.worker.progress import RETRIED, killed
from shared.worker.results import ChordTimeout
from shared.worker.wire import MalformedMessage, check_message, check_protocol

logger = logging.getLogger(__name__)

#: First delay before a task whose result could not be stored runs again (as service.py's).
RESULT_OUTAGE_DELAY = 5
DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")
TRACEBACK_LIMIT = 2000
MESSAGE_LIMIT = 1000
#: Properties the dead-letter copy keeps. Not ``expiration`` (the copy would expire out of
#: the DLQ) nor ``user_id`` (the broker checks it against the publishing user).
KEPT_PROPERTIES = ("correlation_id", "reply_to", "message_id", "priority", "timestamp", "type",
                   "app_id")  # fmt: skip


#: Sent for every dead letter the worker publishes (``service``, ``reason``, ``task``): the
#: one place that sees them all, task failures and messages no task could run alike.
dead_lettered = Signal(name="dead_lettered")


def reason_for(exc: BaseException) -> str:
    """A short, stable code an operator can filter dead letters by."""
    if isinstance(exc, MalformedMessage):
        return exc.reason
    if isinstance(exc, InvalidTaskError):
        return "malformed-message"
    if isinstance(exc, Reject) and isinstance(exc.reason, ChordTimeout):
        return "chord-timeout"
    if isinstance(exc, Reject) and isinstance(exc.reason, UnsupportedVersion):
        return "unsupported-version"
    if isinstance(exc, Reject):
        return "rejected"
    if isinstance(exc, DecodeError):
        return "undecodable-body"
    if isinstance(exc, ContentDisallowed):
        return "content-type-not-allowed"
    if isinstance(exc, TimeLimitExceeded):
        return "time-limit"
    return "task-failed"


def original_route(service_name: str, delivery: dict) -> tuple[str, str]:
    """Where the message was published, seen through native delayed delivery.

    A countdown retry reaches the queue via ``celery_delayed_delivery`` with the delay
    encoded as 28 binary digits before the real routing key, forwarded from the
    service's own exchange.
    """
    exchange = delivery.get("exchange") or ""
    routing_key = delivery.get("routing_key") or ""
    if exchange.startswith("celery_delayed"):
        return service_name, DELAY_PREFIX.sub("", routing_key, count=1)
    return exchange, routing_key


def dead_letter(
    app,
    message,
    *,
    reason: str,
    exc: BaseException | None,
    traceback: str | None = None,
) -> None:
    """Publish a confirmed copy of ``message`` to its service's DLX with failure headers."""
    topo = service(app.main)
    sent = received(message)  # a translated CloudEvent is dead-lettered as it was sent
    headers = dict(sent.headers or {})
    delivery = message.delivery_info or {}
    cause = exc.reason if isinstance(exc, Reject) and exc.reason is not None else exc
    if traceback is None and cause is not None and cause.__traceback__ is not None:
        traceback = "".join(tb.format_exception(cause))
    who = publisher(app, message)  # a replay is recorded as the publisher and route it replays
    route = {"exchange": who.exchange, "routing_key": who.routing_key} if who.exchange else delivery
    exchange, routing_key = original_route(topo.name, route)
    headers.update(
        {
            "x-dead-letter-reason": reason,
            "x-exception-type": type(cause).__name__ if cause is not None else "",
            "x-exception-message": str(cause)[:MESSAGE_LIMIT] if cause is not None else "",
            "x-traceback": (traceback or "")[-TRACEBACK_LIMIT:],
            "x-service": topo.name,
            "x-task": str((message.headers or {}).get("task") or ""),
            "x-attempts": _attempts(headers.get("retries")),
            ORIGINAL_USER: who.user or "",  # the broker's word, never the sender's
            "x-original-exchange": exchange,
            "x-original-routing-key": routing_key,
            "x-original-queue": topo.queue_for(exchange, routing_key),
            "x-dead-lettered-at": datetime.now(UTC).isoformat(),
            **note(message),
        }
    )
    properties = message.properties or {}
    with app.producer_pool.acquire(block=True) as producer:
        producer.publish(
            getattr(message, "wire_body", sent.body) or b"",  # the bytes as they arrived
            exchange=topo.dlx,
            routing_key=headers["x-original-queue"],
            headers=headers,
            content_type=sent.content_type or "application/octet-stream",
            content_encoding=sent.content_encoding or "binary",
            delivery_mode=2,
            **{k: properties[k] for k in KEPT_PROPERTIES if properties.get(k) is not None},
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
    record_result(app, (message.headers or {}).get("id"), headers)  # the caller's get() raises
    dead_lettered.send(sender=app, service=topo.name, reason=reason, task=headers["x-task"])
    record_dead_letter(headers, reason, topo.dlq)
    logger.error(
        "dead-lettered %s message task=%s id=%s reason=%s: %s",
        topo.name,
        headers["x-task"],
        (message.headers or {}).get("id"),
        reason,
        headers["x-exception-message"],
    )


def _attempts(retries: object) -> int:
    """How many times the task ran; a sender's garbage ``retries`` header counts as none."""
    return retries + 1 if type(retries) is int and retries >= 0 else 1


def settle_dead(app, message, *, reason: str, exc: BaseException | None, **kw) -> bool:
    """Dead-letter with reasons; True when the copy is confirmed and the original may be acked."""
    try:
        dead_letter(app, message, reason=reason, exc=exc, **kw)
    except Exception:
        logger.exception("could not publish a dead-letter copy; rejecting to the native DLX")
        return False
    return True


def is_final(exc: BaseException) -> bool:
    """A failure the task will not recover from by itself (no retry, no redelivery)."""
    if isinstance(exc, Reject):
        return not exc.requeue
    return not isinstance(exc, (Retry, Ignore, WorkerLostError, SystemExit, KeyboardInterrupt))


def _keep_wire_body(message) -> None:
    """Keep the body's bytes for the dead-letter copy, then decode it as py-amqp would have.

    py-amqp decodes a body by its ``content_encoding`` on arrival, and the copy re-encoded
    it: a codec that does not round-trip (UTF-16 with a big-endian byte-order mark) changed
    the body the DLQ promises to keep. So the consuming channel does not decode
    (``DeadLetteringConsumer.connect``) and this does, keeping the bytes as ``wire_body``.
    A bodyless message arrives as ``''``, which no codec may encode: ``b""``.
    """
    body = message.body
    message.wire_body = body.encode() if isinstance(body, str) else body
    if isinstance(body, bytes) and message.content_encoding:
        # As py-amqp: an unknown codec or bytes it cannot decode leave the body bytes.
        with suppress(Exception):
            message.body = body.decode(message.content_encoding)


class TaskExpired(Exception):
    """The message's ``expires`` passed before a worker could run it."""


class DeadLetteringRequest(Request):
    """A task request whose final failure dead-letters the message with its reasons."""

    def maybe_expire(self) -> bool:
        """Expired, without adding the id to the worker's revoked set: the message is
        dead-lettered (``_announce_revoked``), and its replay must run, not be discarded."""
        return bool(self.expires and datetime.now(self.expires.tzinfo or UTC) > self.expires)

    def _announce_revoked(self, reason, terminated, signum, expired) -> None:
        """Celery acks an expired message away; keep it in the DLQ with reason ``expired``."""
        if expired and not self.acknowledged:
            at = self.expires.astimezone(UTC).isoformat()  # stored data is UTC, whatever was sent
            exc = TaskExpired(f"expired at {at} before it could run")
            if settle_dead(self.app, self._message, reason="expired", exc=exc):
                self.acknowledge()
            else:
                self.reject(requeue=False)
        super()._announce_revoked(reason, terminated, signum, expired)

    #: Settled after its hard time limit by ``_settle_killed``: Celery's timeout handling
    #: (FAILURE row, ``on_failure``, ack) is not this task's outcome.
    _settled_killed = False

    def on_failure(self, exc_info, send_failed_event: bool = True, return_ok: bool = False):
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
        return super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )

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
        record = killed(self.worker_pid, self.id)
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
        self.task.push_request(dict(self._request_dict), args=self.args, kwargs=self.kwargs)
        try:
            self.task.retry_after_outage(exc, RESULT_OUTAGE_DELAY)
        except Retry as retry:
            logger.warning("%s[%s]: result not stored, database away; again in %s s",
                           self.task_name, self.id, retry.when)  # fmt: skip
        except Exception:
            logger.exception("%s[%s]: could not schedule its run after the outage",
                             self.task_name, self.id)  # fmt: skip
            return False
        finally:
            self.task.pop_request()
        self.acknowledge()
        task_ready(self)
        return True


def _delivery_gone(message) -> bool:
    """The channel ``message`` came on is closed: it can be neither acked nor copied alone."""
    channel = getattr(message, "channel", None)
    return channel is not None and (
        not getattr(channel, "is_open", True) or getattr(channel, "connection", 1) is None
    )


class DeadLetteringConsumer(Consumer):
    """Closes Celery's holes: nothing the worker cannot run is acked away or lost silently."""

    def create_task_handler(self, promise=promise):
        """Celery's message handler, with anything that escapes it dead-lettered.

        Whatever a message makes the handler raise is an "Unrecoverable error" that stops
        the worker, and the redelivered message stops the next one. So a protocol-2 message
        is checked first (``shared.worker.wire``), and anything else that escapes is dead-lettered
        too. A broken connection still propagates (the consumer reconnects); an error after
        the message was settled is only logged.
        """
        handle = super().create_task_handler(promise)
        recoverable = self.connection_errors + self.channel_errors
        max_eta = self.app.conf.broker_consumer_timeout / 2
        max_time_limit = self.app.conf.broker_consumer_timeout

        def on_task_received(message) -> None:
            try:
                check_properties(message)
                _keep_wire_body(message)
                translate(message, service(self.app.main))
                check_protocol(message)
                check_message(message, max_eta, max_time_limit)
                check_allowed(self.app, message)
                handle(message)
            except recoverable:
                raise
            except Exception as exc:
                if message.acknowledged:
                    logger.exception("error after settling message %s", message.delivery_tag)
                else:
                    known = isinstance(exc, InvalidTaskError | DecodeError | ContentDisallowed)
                    self._dead(message, reason_for(exc) if known else "malformed-message", exc)

        return on_task_received

    def connect(self):
        """The consuming connection, with bodies as the bytes on the wire (``_keep_wire_body``)."""
        install()  # properties py-amqp cannot decode: delivered marked (shared.worker.frames)
        conn = super().connect()
        conn.default_channel.auto_decode = False
        return conn

    def _dead(self, message, reason: str, exc: BaseException | None) -> None:
        if settle_dead(self.app, message, reason=reason, exc=exc):
            message.ack()
        else:
            message.reject(requeue=False)

    def on_decode_error(self, message, exc):
        self._dead(message, "undecodable-body", exc)

    def on_unknown_message(self, body, message):
        self._dead(message, "no-task-header", ValueError("message has no 'task' header"))

    def on_unknown_task(self, body, message, exc):
        name = (message.headers or {}).get("task")
        self._dead(
            message, "unknown-task", LookupError(f"no task named {name!r} in {self.app.main}")
        )

    def on_invalid_task(self, body, message, exc):
        self._dead(message, reason_for(exc) if exc else "malformed-message", exc)
