"""Task results in PostgreSQL: Celery's database backend with one statement per write.

The stock backend opens an ORM session per state change, reads the row, locks it, then
inserts or updates and commits: four or five round trips, on a new connection outside
prefork children (NullPool). With ``task_track_started`` every task writes twice, and
that was most of a task's cost here. This backend writes each state change as a single
``INSERT ... ON CONFLICT DO UPDATE`` on a pooled engine per process, whose WHERE clause
keeps states from moving back (``moves_forward``): nothing overwrites a stored SUCCESS,
as in Celery, and no STARTED or RETRY overwrites a FAILURE or REVOKED. Reads,
groups, chords and cleanup are Celery's own code on the same tables.

A task writes STARTED and then its final state; for a short task the first is wasted
work. STARTED rows wait ``STARTED_DELAY`` in a per-process buffer and are written in
one statement by a background thread; a final state that arrives first replaces its
STARTED row. A SUCCESS no workflow reads (not a group or chord member) goes through the
same buffer: the worker acks the message without waiting for that round trip to
PostgreSQL, the row follows within ``result_write_delay`` (``RESULT_WRITE_DELAY``,
``STARTED_DELAY`` by default). A process killed in those milliseconds loses the row (the
task reads STARTED or PENDING, or runs again if its parent had not read the result yet),
never a message. Once the writer finds the database away, successes are written before
their ack until it is back (``PendingRows.add_final``): an outage puts at risk only the
rows acked before the writer noticed it, which are retried, and written before a pool
process exits in order.
FAILURE, REVOKED and every final state of a group or chord member are written before
the ack (the latter durably, below).

Rows a workflow waits on are committed durably: the final state of a group or chord
member (``chord_unlock`` completes a chord only when it reads every member's row as
done). The others use ``synchronous_commit=off`` unless ``RESULT_SYNCHRONOUS_COMMIT``:
the commit does not wait for the WAL flush, and a PostgreSQL crash can lose the last
fraction of a second of them (a finished task reads STARTED), never a message (acks are
RabbitMQ's) nor a service's own data (its transactions stay durable). Durable everywhere
cost 9 to 34 % of the task throughput of the bench row "all guarantees" here.

A chord still waits on members that never report (a message dead-lettered without a
result, a row deleted): Celery's ``chord_unlock`` polls forever. This backend bounds it
at the app setting ``chord_timeout`` (seconds; an hour if unset); then the
chord's body fails with a ChordError and the unlock message is dead-lettered with a
``ChordTimeout`` naming the members still missing.
"""

import logging
import math
import os
from functools import partial
from typing import Any

import sqlalchemy as sa
from celery import Celery, states
from celery.backends.database import DatabaseBackend
from celery.exceptions import BackendStoreError, MaxRetriesExceededError, Reject
from celery.result import result_from_tuple
from kombu.utils.encoding import ensure_bytes
from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from shared.worker.pending_rows import (
    FINAL,
    STARTED_DELAY,
    PendingRows,
    database_away,
    row_refused,
)

SKIPPED = {"id", "task_id", "children", "stamps"}
CHORD_TIMEOUT = 3600
#: Celery's ``date_done`` is a timestamp without time zone: PostgreSQL stores an aware time
#: there as the wall time of the session's zone, which libpq takes from ``PGTZ`` or the
#: server's ``timezone``. Stored data is UTC, so every result session runs in UTC.
UTC_SESSION = "-c timezone=UTC"
logger = logging.getLogger(__name__)


class ChordTimeout(Exception):
    """A chord's header did not complete within ``chord_timeout``."""


class PostgresBackend(DatabaseBackend):
    app: Celery  # set by celery's Backend.__init__ (celery-types does not declare them)
    url: str
    _dead_letter_rows: PendingRows  # shared.dead_results' writer, made on first use
    _engines: dict[bool, Engine] = {}
    _engine_pid = 0
    _statement: Any = None
    _started: PendingRows | None = None

    def mark_as_failure(self, task_id: str, exc: Exception, *args: Any, **kwargs: Any) -> None:
        """Not when the failure is that a result could not be stored (its database away):
        the task did its work and runs again once the database is back
        (``DeadLetteringRequest``). Recorded, FAILURE would be final, and a chord waiting
        for the task would fail with it."""
        if isinstance(exc, BackendStoreError):
            return None
        return super().mark_as_failure(task_id, exc, *args, **kwargs)

    def _started_rows(self) -> PendingRows:
        if self._started is None or self._started.pid != os.getpid():
            delay = self.app.conf.get("result_write_delay", STARTED_DELAY)
            self._started = PendingRows(self._upsert, delay, self.app.main or "")
        return self._started

    def _writer(self, durable: bool) -> Engine:
        """A pooled engine per process whose commits wait for the WAL flush or not."""
        if self._engine_pid != os.getpid():
            self._engines, self._engine_pid = {}, os.getpid()
        if durable not in self._engines:
            commit = "on" if durable or self.app.conf.result_synchronous_commit else "off"
            self._engines[durable] = create_engine(
                self.url,
                pool_size=4,
                isolation_level="AUTOCOMMIT",  # one statement: no BEGIN/COMMIT round trips
                # A black-holed database must fail a write, not hang the worker on connect.
                connect_args={
                    "options": f"-c synchronous_commit={commit} {UTC_SESSION}",
                    "connect_timeout": 10,
                },
            )
        return self._engines[durable]

    def on_backend_retryable_error(self, exc: Exception) -> None:
        """A broken connection (database restarted, failover): start afresh on retry."""
        super().on_backend_retryable_error(exc)  # type: ignore[misc]  # not in celery-types
        for engine in self._engines.values():
            engine.dispose()
        self._engines = {}

    def _row(self, result: Any, state: str, traceback: str | None, request: Any) -> dict[str, Any]:
        if traceback:  # a text column holds no NUL: the caller's notice must not be refused
            traceback = traceback.replace("\x00", "\\x00")
        meta = self._get_result_meta(  # type: ignore[attr-defined]  # not in celery-types
            result=ensure_bytes(self.encode(result)), state=state, traceback=traceback,
            request=request, format_date=False, encode=True,
        )  # fmt: skip
        table = self.task_cls.__table__
        row = {c.name: meta.get(c.name) for c in table.columns if c.name not in SKIPPED}
        children = meta.get("children")
        row["children"] = ensure_bytes(self.encode(children)) if children else None
        return row

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if state == states.STARTED:
            self._started_rows().add(task_id, partial(self._row, result, state, traceback, request))
            return result
        row = self._row(result, state, traceback, request)
        if state == states.RETRY:
            self._note_retry(task_id, row)
        elif state == states.SUCCESS and write_behind(request):
            self._started_rows().add_final(task_id, row)
        else:
            self._started_rows().cancel(task_id)
            try:
                self._upsert({task_id: row}, durable=state in FINAL and in_workflow(request))
            except DBAPIError as exc:
                # Refused, not away (a NUL in a traceback, an id too long): no retry can
                # store it, and retried as an outage the task ran again for an hour. Dropped
                # as the buffer drops such rows; the task settles by its own outcome.
                if database_away(exc):
                    raise
                logger.error("result row of task %r refused by the database, dropped: %s",
                             task_id, exc)  # fmt: skip
                row_refused.send(sender=self, service=self.app.main, task_id=task_id, exc=exc)
        return result

    def _note_retry(self, task_id: str, row: dict[str, Any]) -> None:
        """A RETRY row is a progress note: the retry is already a message in the broker.
        When the database is the reason for the retry, failing to write the note must not
        fail the task (it would be dead-lettered while its retry runs)."""
        self._started_rows().cancel(task_id)
        try:
            self._upsert({task_id: row})
        except DBAPIError as exc:
            logger.warning("task %s: RETRY state not stored: %s", task_id, exc)

    def _upsert(self, rows: dict[str, dict[str, Any]], durable: bool = False) -> None:
        params = [{"task_id": task_id, **row} for task_id, row in rows.items()]
        with self._writer(durable).connect() as conn:
            conn.execute(self._upsert_statement(), params)

    def _upsert_statement(self) -> Any:
        """Built once: rows go as parameters, so SQLAlchemy compiles it a single time."""
        if self._statement is None:
            table = self.task_cls.__table__
            statement = insert(table)
            columns = [c.name for c in table.columns if c.name not in SKIPPED | {"children"}]
            self._statement = statement.on_conflict_do_update(
                index_elements=[table.c.task_id],
                set_={c: statement.excluded[c] for c in [*columns, "children"]},
                where=moves_forward(table.c, statement.excluded),
            )
        return self._statement

    def fallback_chord_unlock(
        self, header_result: Any, body: Any, countdown: int = 1, **kwargs: Any
    ) -> Any:
        """Bound the polling: Celery's ``chord_unlock`` retries forever (``max_retries=None``).
        The bound travels in the unlock message, set by whoever applies the chord."""
        if kwargs.get("max_retries") is None:
            interval = kwargs.get("interval") or self.app.conf.result_chord_retry_interval
            kwargs["max_retries"] = math.ceil(self._chord_timeout() / interval)
        return super().fallback_chord_unlock(header_result, body, countdown=countdown, **kwargs)

    def chord_error_from_stack(self, callback: Any, exc: Exception | None = None) -> Any:
        """Fail the chord's body (Celery's part). When ``chord_unlock`` calls this because its
        polls ran out, Celery then re-raises MaxRetriesExceededError, a message listing the
        whole callback; raise instead the rejection that dead-letters the unlock message
        with a ChordTimeout naming the members that never reported."""
        failed = super().chord_error_from_stack(callback, exc)
        gave_up = getattr(exc, "__cause__", None)
        if isinstance(gave_up, MaxRetriesExceededError) and gave_up.task_args:
            raise Reject(self._timeout_of(gave_up), requeue=False) from gave_up
        return failed

    def _timeout_of(self, gave_up: MaxRetriesExceededError) -> ChordTimeout:
        group_id = gave_up.task_args[0]
        members = [result_from_tuple(r, app=self.app) for r in gave_up.task_kwargs["result"]]
        missing = [m.id for m in members if not m.ready()]
        return ChordTimeout(
            f"chord {group_id}: {len(missing)} of {len(members)} header tasks not done after"
            f" {self._chord_timeout()} s: {', '.join(missing[:10])}"
        )

    def _chord_timeout(self) -> float:
        timeout: float = self.app.conf.get("chord_timeout", CHORD_TIMEOUT)
        return timeout


def write_behind(request: Any) -> bool:
    """A success the worker may ack before its row is written: of a task it is running
    (a ``request``), that no group or chord reads to go on."""
    return (
        request is not None
        and getattr(request, "id", None) is not None
        and not (in_workflow(request))
    )


def in_workflow(request: Any) -> bool:
    """A group or chord member: a workflow reads its row to go on."""
    return bool(getattr(request, "group", None) or getattr(request, "chord", None))


def moves_forward(stored: Any, new: Any) -> Any:
    """When a write may replace the stored row: states never move back from a final one.

    Writes of one task id race: a prefork child writes its STARTED row from a buffer after
    the worker's parent recorded FAILURE for a rejected task; an attempt's RETRY row can
    land after the next attempt's STARTED. So nothing replaces SUCCESS; a non-final state
    (STARTED, RETRY) never replaces FAILURE or REVOKED, nor the row of a later attempt
    (``retries``). A final state replaces FAILURE or REVOKED: a task replayed from the DLQ
    may still succeed. A retried task going RETRY -> STARTED moves forward.
    """
    later_attempt = sa.func.coalesce(new.retries, 0) >= sa.func.coalesce(stored.retries, 0)
    return sa.and_(
        stored.status != states.SUCCESS,
        sa.or_(is_final(new.status), sa.and_(sa.not_(is_final(stored.status)), later_attempt)),
    )


def is_final(status: Any) -> Any:
    """``status IN ('FAILURE', 'REVOKED', 'SUCCESS')`` written out: an IN of bound values
    is an "expanding" parameter, which SQLAlchemy refuses in an executemany (a batch of
    rows), so a batch of more than one row could never be written."""
    return sa.or_(*(status == sa.literal_column(f"'{state}'") for state in FINAL))
