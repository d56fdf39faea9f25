"""Dead letters: read them with their reasons and task rows, purge them (``replay.py``
sends them back).

A listing (``listed``) is one pass round the DLQ: every message that was there at the
start moves from its head to its tail (``shared.ops.moving``: a transaction per batch of
at most ``moving.BATCH``), and only the page asked for is kept. So a pass that finishes
leaves the DLQ in the order it had, never more than a batch is unacked or in memory, and
reading costs no delivery. A pass killed part-way leaves every message once, the DLQ
starting where it stopped and the batch it held back at the head in no fixed order
(``shared.ops.moving``). A dead letter that arrives during a pass lands among the ones
already moved.

``opened`` (the replay's read) still takes every message and holds it until the end
(a replay acks every copy of a dead letter with its publish, and copies can be anywhere
in the DLQ); what it did not replay then goes back to the tail, in order.
"""

import getpass
from collections.abc import Callable, Iterator, Set
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection
from sqlalchemy import Engine, text

from shared.core.topology import ServiceTopology
from shared.ops.moving import move, put_back
from shared.worker import intake
from shared.worker.allowed import ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY, ORIGINAL_USER
from shared.worker.frames import install

ORIGINAL_HEADERS = (ORIGINAL_USER, ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY)
#: The longest task id the audit and result tables store (Celery's own column is 155).
TASK_ID_MAX = 155


@dataclass
class DeadLetter:
    """One message in a DLQ, with what the failed task's row says about it."""

    message: Any
    headers: dict[str, Any]
    status: str | None = None
    outcome: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    #: Acked by whoever took it (a replay): not to be put back.
    settled: bool = False
    #: What the worker read a CloudEvent or plain envelope an upstream sent as (``task``,
    #: ``id``: the event's type and id), see ``shared.worker.intake``.
    translated: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, message: Any, topo: ServiceTopology) -> "DeadLetter":
        headers = dict(message.headers or {})
        as_task = {} if "task" in headers else intake.translated(message, topo) or {}
        return cls(message, headers, translated=as_task)

    @property
    def task_id(self) -> str:
        """The id a worker runs it under, if it fits the task id columns, else ``""`` (a
        sender may have put anything there): its ``id`` header; without one (a CloudEvent
        or plain envelope as an upstream sent it), the event id the worker reads it as."""
        value = self.headers.get("id") if "id" in self.headers else self.translated.get("id")
        return value if isinstance(value, str) and len(value) <= TASK_ID_MAX else ""

    @property
    def task(self) -> str:
        """The task it was sent to: its ``task`` header, else what the worker read it as."""
        task = self.headers.get("task") or self.headers.get("x-task")
        return str(task or self.translated.get("task") or "?")

    @property
    def correlation_id(self) -> str | None:
        """The ``x-correlation-id`` header: what started the chain this message is part of."""
        return _text(self.headers.get("x-correlation-id"))

    @property
    def causation_id(self) -> str | None:
        """The ``x-causation-id`` header: the event or command that caused this message."""
        return _text(self.headers.get("x-causation-id"))

    @property
    def origin(self) -> str:
        """The work queue it died in: our header, else RabbitMQ's own ``x-death``."""
        if self.headers.get("x-original-queue"):
            return str(self.headers["x-original-queue"])
        deaths = self.headers.get("x-death") or [{}]
        return str(deaths[0].get("queue") or "")

    def publisher(self, work_queues: Set[str]) -> dict[str, str]:
        """Who first published it and by which route, as the worker is to judge its replay
        (``shared.worker.allowed``): the worker's record, in a copy the worker made; in a copy
        RabbitMQ made (its newest ``x-death`` names the work queue it died in), the
        ``user_id`` the broker validated and the route ``x-death`` gives. Never what the
        sender wrote in ``x-original-*`` headers of its own."""
        deaths = self.headers.get("x-death")
        death = deaths[0] if isinstance(deaths, list) and deaths else {}
        death = death if isinstance(death, dict) else {}
        if "x-dead-letter-reason" in self.headers and death.get("queue") not in work_queues:
            return {h: _text(self.headers.get(h)) or "" for h in ORIGINAL_HEADERS}
        keys = death.get("routing-keys")
        key = keys[0] if isinstance(keys, list) and keys else ""
        values = (self.message.properties.get("user_id"), death.get("exchange"), key)
        return {h: _text(v) or "" for h, v in zip(ORIGINAL_HEADERS, values, strict=True)}

    @property
    def dead_lettered_at(self) -> str:
        """When this copy was made: tells two copies of one dead letter apart."""
        if self.headers.get("x-dead-lettered-at"):
            return str(self.headers["x-dead-lettered-at"])
        deaths = self.headers.get("x-death") or [{}]
        return str(deaths[0].get("time") or "")


def _text(value: Any) -> str | None:
    """A header as text (AMQP long strings arrive as bytes when not UTF-8), None if unset."""
    if value is None or value == "":
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class Page:
    """Dead letters ``offset`` to ``offset + len(letters)`` of the ``matched`` that a pass
    around a DLQ of ``depth`` messages found."""

    letters: list[DeadLetter]
    offset: int
    matched: int
    depth: int


def listed(
    amqp_url: str,
    topo: ServiceTopology,
    *,
    offset: int = 0,
    limit: int = 50,
    keep: Callable[[DeadLetter], bool] = lambda letter: True,
) -> Page:
    """One pass round the DLQ (see the module docstring): the dead letters ``keep``
    accepts, from the ``offset``-th, at most ``limit`` of them."""
    page: list[DeadLetter] = []
    matched = 0

    def visit(message: Any) -> None:
        nonlocal matched
        letter = DeadLetter.read(message, topo)
        if keep(letter):
            if offset <= matched < offset + limit:
                page.append(letter)
            matched += 1

    install()  # a dead letter py-amqp cannot decode is read, not raised (shared.worker.frames)
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        channel: Any = conn.channel()  # py-amqp's Channel: kombu types it as StdChannel
        channel.auto_decode = False  # bodies as they were published, whatever the codec says
        depth = channel.queue_declare(topo.dlq, passive=True).message_count
        if depth == 0 and (late := channel.basic_get(topo.dlq, no_ack=False)) is not None:
            # Read anyway, so a user who may not read the DLQ is told so even when it is
            # empty; one that arrived since the count goes back, for the next listing.
            channel.basic_reject(late.delivery_tag, requeue=True)
        move(channel, topo.dlq, topo.dlq, depth, each=visit)
        channel.close()
    return Page(page, offset, matched, depth)


@contextmanager
def opened(amqp_url: str, topo: ServiceTopology) -> Iterator[tuple[Any, list[DeadLetter]]]:
    """The DLQ's messages, unsettled: the caller acks what it consumed and marks it
    ``settled``; the rest go back to the tail in order (``moving.put_back``). If the caller
    fails, the channel closes: the broker drops what it did not commit and returns the
    messages (out of order, none lost)."""
    install()  # a dead letter py-amqp cannot decode is read, not raised (shared.worker.frames)
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        channel: Any = conn.channel()  # py-amqp's Channel: kombu types it as StdChannel
        channel.auto_decode = False  # bodies as they were published, whatever the codec says
        channel.queue_declare(topo.dlq, passive=True)
        taken = []
        while (message := channel.basic_get(topo.dlq, no_ack=False)) is not None:
            taken.append(DeadLetter.read(message, topo))
        try:
            yield channel, taken
            put_back(channel, [d.message for d in taken if not d.settled], topo.dlq)
        finally:
            channel.close()


def join_results(engine: Engine, topo: ServiceTopology, letters: list[DeadLetter]) -> None:
    """Attach each task's row from ``<service>.celery_taskmeta`` (by task id)."""
    ids = [d.task_id for d in letters if d.task_id]
    with engine.connect() as conn:
        table = f"{topo.name}.celery_taskmeta"
        if not ids or conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
            return
        rows = conn.execute(
            text(
                f'SELECT task_id, status, date_done, name, worker FROM "{topo.name}"'
                ".celery_taskmeta WHERE task_id = ANY(:ids)"
            ),
            {"ids": ids},
        ).mappings()
        by_id = {r["task_id"]: dict(r) for r in rows}
    for letter in letters:
        letter.result = by_id.get(letter.task_id, {})
        letter.status = letter.result.get("status")


def depth(amqp_url: str, topo: ServiceTopology) -> int:
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        channel: Any = conn.channel()  # py-amqp's Channel: kombu types it as StdChannel
        depth: int = channel.queue_declare(topo.dlq, passive=True).message_count
        return depth


def purge(amqp_url: str, engine: Engine, topo: ServiceTopology) -> int:
    """Delete every message in the DLQ; the count goes to the audit table."""
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        channel: Any = conn.channel()  # py-amqp's Channel: kombu types it as StdChannel
        purged: int = channel.queue_purge(topo.dlq) or 0
    with engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO ops.dlq_audit (action, service, operator, messages, queue)"
                " VALUES ('purge', :s, :o, :n, :q)"
            ),
            {"s": topo.name, "o": getpass.getuser(), "n": purged, "q": topo.dlq},
        )
    return purged
