"""Dead letters: read them with their reasons and task rows, purge them (``replay.py``
sends them back).

Reading takes every message with ``basic_get`` and settles none of them until the end: a
message that is not replayed goes back to the DLQ when the channel closes.
"""

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection
from sqlalchemy import Engine, text

from shared.topology import ServiceTopology

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

    @property
    def task_id(self) -> str:
        """The ``id`` header if a worker could run a task by it (a string that fits the
        task id columns), else ``""``: a sender may have put anything there."""
        value = self.headers.get("id")
        return value if isinstance(value, str) and len(value) <= TASK_ID_MAX else ""

    @property
    def origin(self) -> str:
        """The work queue it died in: our header, else RabbitMQ's own ``x-death``."""
        if self.headers.get("x-original-queue"):
            return str(self.headers["x-original-queue"])
        deaths = self.headers.get("x-death") or [{}]
        return str(deaths[0].get("queue") or "")

    @property
    def dead_lettered_at(self) -> str:
        """When this copy was made: tells two copies of one dead letter apart."""
        if self.headers.get("x-dead-lettered-at"):
            return str(self.headers["x-dead-lettered-at"])
        deaths = self.headers.get("x-death") or [{}]
        return str(deaths[0].get("time") or "")


@contextmanager
def opened(amqp_url: str, topo: ServiceTopology) -> Iterator[tuple[Any, list[DeadLetter]]]:
    """The DLQ's messages, unsettled: the caller acks what it consumed, the rest return."""
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
        channel.auto_decode = False  # bodies as they were published, whatever the codec says
        channel.queue_declare(topo.dlq, passive=True)
        taken = []
        while (message := channel.basic_get(topo.dlq, no_ack=False)) is not None:
            taken.append(DeadLetter(message, dict(message.headers or {})))
        try:
            yield channel, taken
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
        return conn.channel().queue_declare(topo.dlq, passive=True).message_count


def purge(amqp_url: str, engine: Engine, topo: ServiceTopology) -> int:
    """Delete every message in the DLQ; the count goes to the audit table."""
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        purged = conn.channel().queue_purge(topo.dlq) or 0
    with engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO ops.dlq_audit (action, service, operator, messages, queue)"
                " VALUES ('purge', :s, :o, :n, :q)"
            ),
            {"s": topo.name, "o": getpass.getuser(), "n": purged, "q": topo.dlq},
        )
    return purged
