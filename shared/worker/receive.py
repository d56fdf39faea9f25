"""The receive path: every message a worker is delivered passes these steps, in order.

    STEPS = (check_frames, keep_raw_body, read_form, check_protocol, check_limits,
             check_sender)

then Celery's own handler turns it into a task request (dispatch). A step refuses a
message by raising; whatever any step (or Celery's handler) raises is dead-lettered with
its reason, never acked away, never allowed to stop the worker: Celery treats an exception
from its message handler as an "Unrecoverable error" that stops the worker, and the
redelivered message would stop the next one. A broken connection still propagates (the
consumer reconnects); an error after the message was settled is only logged.

Each step is a plain function of (``Receiving``, message), so a test can run one alone
(``tests/unit/test_receive_path.py``), and the order is read here, once, as Dramatiq's
middleware list is.
"""

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from kombu import Connection
from kombu.exceptions import ContentDisallowed, DecodeError
from vine import promise

from shared.worker import frames, wire
from shared.worker.allowed import check_allowed
from shared.worker.deadletter import reason_for, settle_dead
from shared.worker.intake import translate

logger = logging.getLogger(__name__)
#: The dead-letter reason of a message whose task no worker of the service knows.
UNKNOWN_TASK = "unknown-task"


@dataclass(frozen=True)
class Receiving:
    """What the steps may consult: the worker's app and the limits its broker sets."""

    app: Any
    max_eta: float
    max_time_limit: float

    @classmethod
    def of(cls, app: Any) -> "Receiving":
        """An eta may wait at most half the consumer timeout, a task run at most all of it."""
        timeout = app.conf.broker_consumer_timeout
        return cls(app, max_eta=timeout / 2, max_time_limit=timeout)


def check_frames(_: Receiving, message: Any) -> None:
    """Properties py-amqp could not decode arrive marked (``shared.worker.frames``); here
    such a message is refused as ``undecodable-frame``."""
    frames.check_properties(message)


def keep_raw_body(_: Receiving, message: Any) -> None:
    """Keep the body's bytes for the dead-letter copy, then decode it as py-amqp would have.

    py-amqp decodes a body by its ``content_encoding`` on arrival, and the copy re-encoded
    it: a codec that does not round-trip (UTF-16 with a big-endian byte-order mark) changed
    the body the DLQ promises to keep. So the consuming channel does not decode
    (``ReceivingConsumer.connect``) and this does, keeping the bytes as ``wire_body``.
    A bodyless message arrives as ``''``, which no codec may encode: ``b""``.
    """
    body = message.body
    message.wire_body = body.encode() if isinstance(body, str) else body
    if isinstance(body, bytes) and message.content_encoding:
        # As py-amqp: an unknown codec or bytes it cannot decode leave the body bytes.
        with suppress(Exception):
            message.body = body.decode(message.content_encoding)


def read_form(receiving: Receiving, message: Any) -> None:
    """A CloudEvent or plain envelope on the service's events queue becomes the task
    message its handler runs from (``shared.worker.intake``); anything else is left as is."""
    translate(message, receiving.app.conf.service_topology)


def check_protocol(_: Receiving, message: Any) -> None:
    """A task message has a ``task`` header (protocol 2; ``shared.worker.wire``)."""
    wire.check_protocol(message)


def check_limits(receiving: Receiving, message: Any) -> None:
    """Headers, content type, body and the eta and time limits the broker can honour."""
    wire.check_message(message, receiving.max_eta, receiving.max_time_limit)


def check_sender(receiving: Receiving, message: Any) -> None:
    """Who may send it: the task, and which of its options are obeyed, by the publisher the
    broker vouches for (``shared.worker.allowed``)."""
    check_allowed(receiving.app, message)


Step = Callable[[Receiving, Any], None]

STEPS: tuple[Step, ...] = (
    check_frames,
    keep_raw_body,
    read_form,
    check_protocol,
    check_limits,
    check_sender,
)


def refusal(exc: BaseException) -> str:
    """The dead-letter reason of a message the receive path (or Celery's handler) refused:
    a malformation it names, else ``malformed-message``."""
    known = isinstance(exc, InvalidTaskError | DecodeError | ContentDisallowed)
    return reason_for(exc) if known else "malformed-message"


def receive(
    receiving: Receiving,
    message: Any,
    dispatch: Callable[[Any], None],
    steps: tuple[Step, ...] = STEPS,
) -> None:
    """Run ``message`` through ``steps``, then ``dispatch`` it; the first step that raises
    stops it there (the caller dead-letters it)."""
    for step in steps:
        step(receiving, message)
    dispatch(message)


class ReceivingConsumer(Consumer):
    """Celery's consumer with the receive path in front of its handler, and its holes
    closed: nothing the worker cannot run is acked away or lost silently."""

    def create_task_handler(self, promise: type[promise] = promise) -> Callable[..., Any]:
        """Celery's message handler behind ``STEPS``, anything that escapes dead-lettered."""
        dispatch = super().create_task_handler(promise)
        # Set by Celery from the connection; celery-types does not declare them.
        recoverable = self.connection_errors + self.channel_errors  # type: ignore[attr-defined]
        receiving = Receiving.of(self.app)

        def on_task_received(message: Any) -> None:
            try:
                receive(receiving, message, dispatch)
            except recoverable:
                raise
            except Exception as exc:
                if message.acknowledged:
                    logger.exception("error after settling message %s", message.delivery_tag)
                else:
                    self._dead(message, refusal(exc), exc)

        return on_task_received

    def connect(self) -> Connection:
        """The consuming connection, with bodies as the bytes on the wire (``keep_raw_body``)."""
        frames.install()  # properties py-amqp cannot decode: delivered marked
        conn = super().connect()
        conn.default_channel.auto_decode = False  # type: ignore[attr-defined]  # py-amqp's Channel
        return conn

    def connection_for_write(self, url: str | None = None, heartbeat: float | None = None) -> Any:
        """The connection of the worker's monitoring events (``-E``; Celery's ``Events``
        step is its only user), without publisher confirms: the app's confirmed publishes
        made each of a task's three events (received, started, succeeded) wait for the
        broker's confirm in the event loop. An event is a notice to whoever watches
        (Flower), lost anyway when nobody's queue is bound; no guarantee rests on it."""
        conn = self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
        )
        return self.ensure_connected(conn)

    def _dead(self, message: Any, reason: str, exc: BaseException | None) -> None:
        if settle_dead(self.app, message, reason=reason, exc=exc):
            message.ack()
        else:
            message.reject(requeue=False)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead(message, "undecodable-body", exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead(message, "no-task-header", ValueError("message has no 'task' header"))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (message.headers or {}).get("task")
        self._dead(message, UNKNOWN_TASK, LookupError(f"no task named {name!r} in {self.app.main}"))

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead(message, reason_for(exc) if exc else "malformed-message", exc)
