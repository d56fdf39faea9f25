"""Task results in PostgreSQL: Celery's database backend with one statement per write.

The stock backend opens an ORM session per state change, reads the row, locks it, then
inserts or updates and commits: four or five round trips, on a new connection outside
prefork children (NullPool). With ``task_track_started`` every task writes twice, and
that was most of a task's cost here. This backend writes each state change as a single
``INSERT ... ON CONFLICT DO UPDATE`` on a pooled engine per process, and keeps Celery's
rule that nothing overwrites a stored SUCCESS (the upsert's WHERE clause). Reads,
groups, chords and cleanup are Celery's own code on the same tables.
"""

import os
from typing import Any

from celery import states
from celery.backends.database import DatabaseBackend
from kombu.utils.encoding import ensure_bytes
from sqlalchemy import Engine, create_engine
from sqlalchemy.dialects.postgresql import insert

SKIPPED = {"id", "task_id", "children", "stamps"}


class PostgresBackend(DatabaseBackend):
    _engine: Engine | None = None
    _engine_pid = 0

    def _writer(self) -> Engine:
        if self._engine is None or self._engine_pid != os.getpid():
            self._engine = create_engine(self.url, pool_size=4, pool_pre_ping=True)
            self._engine_pid = os.getpid()
        return self._engine

    def _row(self, result: Any, state: str, traceback: str | None, request: Any) -> dict:
        meta = self._get_result_meta(
            result=ensure_bytes(self.encode(result)), state=state, traceback=traceback,
            request=request, format_date=False, encode=True,
        )  # fmt: skip
        table = self.task_cls.__table__
        row = {c.name: meta.get(c.name) for c in table.columns if c.name not in SKIPPED}
        children = meta.get("children")
        row["children"] = ensure_bytes(self.encode(children)) if children else None
        return row

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        table = self.task_cls.__table__
        row = self._row(result, state, traceback, request)
        statement = (
            insert(table)
            .values(task_id=task_id, **row)
            .on_conflict_do_update(
                index_elements=[table.c.task_id],
                set_=row,
                where=table.c.status != states.SUCCESS,
            )
        )
        with self._writer().begin() as conn:
            conn.execute(statement)
        return result
