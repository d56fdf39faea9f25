"""Result rows written together, behind the ack, by a background thread of each process
(``shared.worker.results`` says which rows may wait and why; ``shared.worker.dead_results``
uses it for a dead letter's row)."""

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import states
from celery.signals import worker_process_shutdown, worker_shutdown
from celery.utils.dispatch import Signal
from sqlalchemy.exc import InterfaceError, OperationalError

STARTED_DELAY = 0.02
RETRY_INTERVAL = 1.0
STALL = 1.0  # seconds a write may be in flight before final rows stop going behind the ack
FINAL = sorted(states.READY_STATES)  # SUCCESS, FAILURE, REVOKED
logger = logging.getLogger(__name__)

#: Sent (in the process that held it) for a result row the database refused alone and
#: that was dropped; ``shared.ops.metrics`` counts them.
row_refused = Signal(name="row_refused")

_buffers: list["PendingRows"] = []  # this process's, flushed when it shuts down


@worker_process_shutdown.connect
@worker_shutdown.connect
def flush_all(**_: Any) -> None:
    """A pool process (or a threads/solo worker) exiting in order writes its pending rows
    first, waiting for the database while it is away: their tasks were acked already."""
    for rows in _buffers:
        if rows.pid == os.getpid():  # not a parent's, inherited through fork
            rows.flush_until_written()


class PendingRows:
    """Rows waiting to be written together by a background thread: STARTED rows, and the
    final rows of tasks no workflow reads. A later row for a task replaces its pending
    one, except that nothing replaces a final state. Rows the database could not take
    (it is away) stay pending and are tried again every ``RETRY_INTERVAL`` s; meanwhile
    final rows are no longer left behind the ack (``add_final``), so what an outage puts
    at risk is only the rows acked before the writer noticed it, and ``flush_all`` writes
    those before a pool process exits in order."""

    def __init__(
        self,
        write: Callable[[dict[str, dict[str, Any]]], None],
        delay: float = STARTED_DELAY,
        service: str = "",
    ) -> None:
        self.write = write
        self.service = service
        self.delay = delay
        self.pending: dict[str, dict[str, Any] | Callable[[], dict[str, Any]]] = {}
        self.guard = threading.Lock()  # held while ``pending`` is changed or taken
        self.lock = threading.Lock()  # held while a batch is in flight
        self.away = False  # the last write found the database away
        self.writing_since: float | None = None
        self.wake = threading.Event()
        threading.Thread(target=self._run, name="pending-rows", daemon=True).start()
        self.pid = os.getpid()
        _buffers.append(self)

    def add(self, task_id: str, row: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        """Queue ``row``; a callable (a STARTED row) is built only if still pending when the
        batch goes out: a short task's final row usually replaces it before that. Only the
        first row of a batch wakes the writer (waking costs a lock and a thread switch;
        the rows after it go out with it, ``flush`` taking what is pending then)."""
        with self.guard:
            first = not self.pending
            queued = self.pending.get(task_id)
            if queued is None or callable(queued) or queued["status"] not in FINAL:
                self.pending[task_id] = row
        if first:
            self.wake.set()

    def add_final(self, task_id: str, row: dict[str, Any]) -> None:
        """The final row of a task about to be acked: left behind the ack while the writer
        keeps up; while it does not (the database away, a write hanging for ``STALL`` s),
        written before it: the task waits for the database, however long it is away, and
        its message stays unacked meanwhile."""
        behind = self.behind()
        self.add(task_id, row)
        if behind:
            self.flush_until_written()

    def behind(self) -> bool:
        """Rows added now could wait long, held only by this process."""
        started = self.writing_since
        return self.away or (started is not None and time.monotonic() - started > STALL)

    def flush_until_written(self) -> None:
        """Write what is pending, trying again while the database is away."""
        while not self.flush():
            time.sleep(RETRY_INTERVAL)

    def cancel(self, task_id: str) -> None:
        """Drop a pending row; wait for one in flight, so it cannot land last."""
        with self.lock, self.guard:
            self.pending.pop(task_id, None)

    def flush(self) -> bool:
        """Write what is pending now; False when the database is away (rows kept pending).
        A batch the database answered but refused is written again row by row: only the
        rows it refuses alone are dropped (logged, and counted by ``row_refused``)."""
        with self.lock:
            with self.guard:
                queued, self.pending = self.pending, {}
            rows = {task: row() if callable(row) else row for task, row in queued.items()}
            self.writing_since = time.monotonic()
            try:
                if rows:
                    self.write(rows)
                    self.away = False
                return True
            except Exception as exc:
                if database_away(exc):
                    return self._keep(rows, exc)
                return self._one_by_one(rows)
            finally:
                self.writing_since = None

    def _one_by_one(self, rows: dict[str, dict[str, Any]]) -> bool:
        for n, (task_id, row) in enumerate(rows.items()):
            try:
                self.write({task_id: row})
            except Exception as exc:
                if database_away(exc):
                    return self._keep(dict(list(rows.items())[n:]), exc)
                logger.error("result row of task %r refused by the database, dropped: %s",
                             task_id, exc)  # fmt: skip
                row_refused.send(sender=self, service=self.service, task_id=task_id, exc=exc)
        self.away = False
        return True

    def _keep(self, rows: dict[str, dict[str, Any]], exc: Exception) -> bool:
        logger.warning("could not write %d result rows, database away; kept to try again: %s",
                       len(rows), exc)  # fmt: skip
        for task_id, row in rows.items():
            self.add(task_id, row)
        self.away = True
        return False

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            time.sleep(self.delay)
            if not self.flush():
                time.sleep(RETRY_INTERVAL)
                self.wake.set()


def database_away(exc: Exception) -> bool:
    """The write failed because PostgreSQL could not be reached or lost the connection,
    not because it refused these rows (a value too long, a NUL character, ...)."""
    return isinstance(exc, OperationalError | InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )
