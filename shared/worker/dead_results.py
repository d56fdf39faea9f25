"""A dead-lettered task's result: FAILURE with the reason, so its caller stops waiting.

Most dead letters are decided before any task runs (an unknown task name, a malformed
header, an eta too far away, ...): Celery writes no result row for them, and a caller's
``AsyncResult.get()`` would read PENDING until its own timeout. ``dead_letter`` hands each
confirmed dead letter here, which writes a FAILURE row whose exception is
``DeadLettered(reason, message)``: ``get()`` raises it at once, wherever the caller is.

Only when the task id has no row yet (``ON CONFLICT DO NOTHING``): the id is whatever the
sender put in the message's header, and a forged one must not turn another task's SUCCESS,
or its own recorded failure, into this one. The row is written by a background writer
(``PendingRows``): a dead letter never waits on PostgreSQL, and one written while the
database is away is written once it is back.
"""

import logging
import os
from functools import partial
from types import SimpleNamespace
from typing import Any

from celery import states
from sqlalchemy.dialects.postgresql import insert

from shared.worker.pending_rows import PendingRows
from shared.worker.results import PostgresBackend

logger = logging.getLogger(__name__)


class DeadLettered(Exception):
    """The task's message went to its service's DLQ; ``reason`` is its
    ``x-dead-letter-reason`` (``unknown-task``, ``malformed-headers``, ...)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(reason, message)
        self.reason, self.message = reason, message

    def __str__(self) -> str:
        return f"dead-lettered ({self.reason}): {self.message}" if self.message else self.reason


def record(app: Any, task_id: object, headers: dict[str, Any]) -> None:
    """Queue the FAILURE row of the dead letter whose headers are ``headers``; never raises
    (the dead letter is already confirmed: this is only the caller's notice)."""
    try:
        backend = app.backend  # may connect (its first use in this thread): inside the try
        if not isinstance(backend, PostgresBackend) or not isinstance(task_id, str):
            return
        if not _usable(backend, task_id):
            return
        exc = DeadLettered(headers["x-dead-letter-reason"], headers["x-exception-message"])
        request = SimpleNamespace(task=headers["x-task"] or None)
        encoded = backend.encode_result(exc, states.FAILURE)
        row = backend._row(encoded, states.FAILURE, headers["x-traceback"] or None, request)
        _pending(backend).add(task_id, row)
    except Exception:
        logger.exception("dead letter %s: its FAILURE row could not be queued", task_id)


def _usable(backend: PostgresBackend, task_id: str) -> bool:
    """A task id the table can hold: a sender's header may be anything."""
    length = backend.task_cls.__table__.c.task_id.type.length
    return bool(0 < len(task_id) <= length)


def _pending(backend: PostgresBackend) -> PendingRows:
    """This process's writer of dead letters' rows for ``backend``."""
    rows = getattr(backend, "_dead_letter_rows", None)
    if rows is None or rows.pid != os.getpid():
        rows = backend._dead_letter_rows = PendingRows(partial(_insert_absent, backend))
    return rows


def _insert_absent(backend: PostgresBackend, rows: dict[str, dict[str, Any]]) -> None:
    """Insert each row whose task id has none; leave every existing row as it is. Durable:
    a chord may be waiting on the task (its members' rows are, ``shared.worker.results``)."""
    table = backend.task_cls.__table__
    statement = insert(table).on_conflict_do_nothing(index_elements=[table.c.task_id])
    with backend._writer(durable=True).connect() as conn:
        conn.execute(statement, [{"task_id": task_id, **row} for task_id, row in rows.items()])
