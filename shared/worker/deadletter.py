"""Every message that cannot be processed ends in its service's DLQ, carrying why.

Native dead-lettering (``x-dead-letter-exchange``) records only ``x-death``. So the worker
publishes a copy of the dead message (body and properties untouched) to the service's DLX
with failure headers, waits for the broker's confirm, and only then acks the original.
If that copy cannot be published, the original is rejected without requeue and native
dead-lettering still keeps it: the reason is lost, the message is not.

Two places feed this: ``shared.worker.request`` (a task that failed for good) and the
receive path, ``shared.worker.receive`` (messages Celery would otherwise ack away or reject
silently: undecodable bodies, no task header, unknown task names, disallowed content types,
and every message a receiving step refuses).
"""

import logging
import re
import traceback as tb
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.exceptions import (
    Ignore,
    InvalidTaskError,
    Reject,
    Retry,
    TimeLimitExceeded,
    WorkerLostError,
)
from celery.utils.dispatch import Signal
from kombu.exceptions import ContentDisallowed, DecodeError

from shared.contracts.evolution import UnsupportedVersion
from shared.core.topology import service
from shared.core.tracing import record_dead_letter
from shared.worker.allowed import ORIGINAL_USER, publisher
from shared.worker.app import PUBLISH_RETRY_POLICY
from shared.worker.dead_results import record as record_result
from shared.worker.frames import note
from shared.worker.intake import received
from shared.worker.results import ChordTimeout
from shared.worker.wire import MalformedMessage

logger = logging.getLogger(__name__)

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
    if isinstance(exc, Reject):
        cause = exc.reason  # type: ignore[attr-defined]  # not in celery-types
        if isinstance(cause, ChordTimeout):
            return "chord-timeout"
        if isinstance(cause, UnsupportedVersion):
            return "unsupported-version"
        return "rejected"
    if isinstance(exc, DecodeError):
        return "undecodable-body"
    if isinstance(exc, ContentDisallowed):
        return "content-type-not-allowed"
    if isinstance(exc, TimeLimitExceeded):
        return "time-limit"
    return "task-failed"


def original_route(service_name: str, delivery: dict[str, Any]) -> tuple[str, str]:
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
    app: Celery,
    message: Any,
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
    cause = _cause(exc)
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
    _publish(app, message, sent, topo.dlx, headers)
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


def _cause(exc: BaseException | None) -> Any:
    """What the dead letter names: a ``Reject``'s reason when it has one, else ``exc``."""
    reason = getattr(exc, "reason", None) if isinstance(exc, Reject) else None
    return exc if reason is None else reason


def _publish(app: Celery, message: Any, sent: Any, dlx: str, headers: dict[str, Any]) -> None:
    """The confirmed copy: the bytes as they arrived, their properties, ``headers``."""
    properties = message.properties or {}
    with app.producer_pool.acquire(block=True) as producer:
        producer.publish(
            getattr(message, "wire_body", sent.body) or b"",  # the bytes as they arrived
            exchange=dlx,
            routing_key=headers["x-original-queue"],
            headers=headers,
            content_type=sent.content_type or "application/octet-stream",
            content_encoding=sent.content_encoding or "binary",
            delivery_mode=2,
            **{k: properties[k] for k in KEPT_PROPERTIES if properties.get(k) is not None},
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )


def _attempts(retries: object) -> int:
    """How many times the task ran; a sender's garbage ``retries`` header counts as none."""
    return retries + 1 if type(retries) is int and retries >= 0 else 1


def settle_dead(
    app: Celery | None, message: Any, *, reason: str, exc: BaseException | None, **kw: Any
) -> bool:
    """Dead-letter with reasons; True when the copy is confirmed and the original may be acked."""
    try:
        if app is None:  # a task request always has its app; celery-types allows none
            raise RuntimeError("no app to dead-letter with")
        dead_letter(app, message, reason=reason, exc=exc, **kw)
    except Exception:
        logger.exception("could not publish a dead-letter copy; rejecting to the native DLX")
        return False
    return True


def is_final(exc: BaseException) -> bool:
    """A failure the task will not recover from by itself (no retry, no redelivery)."""
    if isinstance(exc, Reject):
        return not exc.requeue  # type: ignore[attr-defined]  # not in celery-types
    return not isinstance(exc, (Retry, Ignore, WorkerLostError, SystemExit, KeyboardInterrupt))
