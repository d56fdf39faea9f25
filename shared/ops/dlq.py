"""Dead letters: read them with their reasons and task rows, replay them, purge them.

Reading takes every message with ``basic_get`` and settles none of them until the end: a
message that is not replayed goes back to the DLQ when the channel closes. A replay
publishes a copy (confirmed) to the service's exchange with the original queue as routing
key and ``retries`` reset to 0, records it in ``ops.dlq_audit``, then acks the dead letter.
A crash between the two leaves both: the next replay skips it, as it skips any task whose
result row already says SUCCESS.
"""

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import amqp
from kombu import Connection
from sqlalchemy import Engine, text

from shared.topology import ServiceTopology

FAILURE_HEADER_PREFIX = "x-"


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
        return str(self.headers.get("id") or "")

    @property
    def origin(self) -> str:
        """The work queue it died in: our header, else RabbitMQ's own ``x-death``."""
        if self.headers.get("x-original-queue"):
            return str(self.headers["x-original-queue"])
        deaths = self.headers.get("x-death") or [{}]
        return str(deaths[0].get("queue") or "")

    @property
    def dead_lettered_at(self) -> str:
        return str(self.headers.get("x-dead-lettered-at") or "")


@contextmanager
def opened(amqp_url: str, topo: ServiceTopology) -> Iterator[tuple[Any, list[DeadLetter]]]:
    """The DLQ's messages, unsettled: the caller acks what it consumed, the rest return."""
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
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


def replayed_before(engine: Engine, topo: ServiceTopology, letter: DeadLetter) -> bool:
    """This very dead letter (task id and time of death) was replayed already."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT 1 FROM ops.dlq_audit WHERE action = 'replay' AND service = :s"
                    " AND task_id = :t AND dead_lettered_at = :d"
                ),
                {"s": topo.name, "t": letter.task_id, "d": letter.dead_lettered_at},
            ).scalar()
        )


def audit(engine: Engine, topo: ServiceTopology, action: str, messages: int, **row: Any) -> None:
    values = {"task_id": None, "task": None, "queue": None, "reason": None}
    values |= {"dead_lettered_at": None, **row}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ops.dlq_audit (action, service, operator, messages, task_id, task,"
                " queue, reason, dead_lettered_at) VALUES (:action, :service, :operator,"
                " :messages, :task_id, :task, :queue, :reason, :dead_lettered_at)"
            ),
            {
                "action": action,
                "service": topo.name,
                "operator": getpass.getuser(),
                "messages": messages,
                **values,
            },
        )


def _replay_copy(letter: DeadLetter) -> amqp.Message:
    """The message as first published: failure headers gone, attempt counter at zero."""
    headers = {k: v for k, v in letter.headers.items() if not k.startswith(FAILURE_HEADER_PREFIX)}
    headers.update({"retries": 0, "eta": None, "x-replayed-at": datetime.now(UTC).isoformat()})
    props = letter.message.properties
    return amqp.Message(
        letter.message.body,
        content_type=props.get("content_type"),
        content_encoding=props.get("content_encoding"),
        correlation_id=props.get("correlation_id"),
        reply_to=props.get("reply_to"),
        application_headers=headers,
        delivery_mode=2,
    )


def _skip_reason(engine: Engine, topo: ServiceTopology, letter: DeadLetter) -> str | None:
    if letter.origin not in {q.name for q in topo.work_queues()}:
        return f"skipped: no work queue of {topo.name} to go back to ({letter.origin!r})"
    if letter.status == "SUCCESS":
        return "skipped: already processed (result SUCCESS)"
    if replayed_before(engine, topo, letter):
        return "skipped: this dead letter was replayed before"
    return None


def replay(
    amqp_url: str,
    engine: Engine,
    topo: ServiceTopology,
    *,
    ids: set[str] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> list[DeadLetter]:
    """Send dead letters back to their queue; each returned letter's ``outcome`` says what."""
    chosen, sent = [], 0
    with opened(amqp_url, topo) as (channel, letters):
        join_results(engine, topo, letters)
        channel.confirm_select()
        for letter in letters:
            if (ids and letter.task_id not in ids) or (limit is not None and sent >= limit):
                continue
            chosen.append(letter)
            skipped = _skip_reason(engine, topo, letter)
            sent += skipped is None
            letter.outcome = skipped or ("would replay" if dry_run else "replayed")
            if letter.outcome != "replayed":
                continue
            channel.basic_publish_confirm(
                _replay_copy(letter), exchange=topo.name, routing_key=letter.origin
            )
            audit(
                engine,
                topo,
                "replay",
                1,
                task_id=letter.task_id,
                task=str(letter.headers.get("task") or ""),
                queue=letter.origin,
                reason=str(letter.headers.get("x-dead-letter-reason") or ""),
                dead_lettered_at=letter.dead_lettered_at,
            )
            channel.basic_ack(letter.message.delivery_tag)
    return chosen


def depth(amqp_url: str, topo: ServiceTopology) -> int:
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        return conn.channel().queue_declare(topo.dlq, passive=True).message_count


def purge(amqp_url: str, engine: Engine, topo: ServiceTopology) -> int:
    """Delete every message in the DLQ; the count goes to the audit table."""
    with Connection(amqp_url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        purged = conn.channel().queue_purge(topo.dlq) or 0
    audit(engine, topo, "purge", purged, queue=topo.dlq)
    return purged
