"""Every write path to PostgreSQL tells "the database is away" (wait, run again) from
"the database refuses this row" (no retry can store it: settle once). Confused, a refused
FAILURE row was retried by Celery's backend and then as an outage, and its task ran again
for an hour (``OUTAGE_BUDGET``). Fake writers stand in for PostgreSQL here; the real one
refuses a NUL in ``tests/integration/test_refused_rows.py``."""

from types import SimpleNamespace

import psycopg
import pytest
from celery import states
from celery.exceptions import Retry
from sqlalchemy.exc import DataError, OperationalError

from shared import Service, ServiceTopology
from shared.worker.pending_rows import PendingRows, database_away, row_refused

AWAY = OperationalError("INSERT", {}, psycopg.OperationalError("connection refused"))
REFUSED = DataError("INSERT", {}, psycopg.DataError("text fields cannot contain NUL"))


def failing(exc: Exception):
    def write(*_, **__) -> None:
        raise exc

    return write


def test_the_two_are_told_apart():
    assert database_away(AWAY) and not database_away(REFUSED)


def buffered(exc: Exception) -> tuple[bool, dict]:
    """Write-behind rows (STARTED, SUCCESS) and dead letters' FAILURE rows
    (``shared.dead_results``) go through a ``PendingRows``."""
    rows = PendingRows(failing(exc), delay=3600)
    rows.add("t1", {"status": states.SUCCESS})
    return rows.flush(), rows.pending


def final_row(exc: Exception, monkeypatch) -> list:
    """A FAILURE row, written before the ack (``PostgresBackend._store_result``)."""
    app = Service(ServiceTopology("shop")).celery
    app.conf.database_create_tables_at_setup = False  # no database here
    backend = app.backend
    monkeypatch.setattr(backend, "_upsert", failing(exc))
    refused: list = []

    def count(task_id: str, **_) -> None:
        refused.append(task_id)

    row_refused.connect(count)
    try:
        backend._store_result("t1", {"exc_type": "ValueError"}, states.FAILURE)
    finally:
        row_refused.disconnect(count)
    return refused


def handler_write(exc: Exception) -> BaseException:
    """A handler's own transaction: its outbox row, a notifier delivery (``Service._call``)."""
    service = Service(ServiceTopology("shop"))
    task = SimpleNamespace(
        request=SimpleNamespace(id="t1"), retry_after_outage=lambda exc, delay: Retry(exc=exc)
    )
    with pytest.raises(BaseException) as raised:
        service._call(task, "shop.step", failing(exc), [], {})
    return raised.value


def test_buffered_rows_wait_out_an_outage_and_drop_a_refused_row():
    assert buffered(AWAY) == (False, {"t1": {"status": states.SUCCESS}})
    assert buffered(REFUSED) == (True, {})


def test_a_final_row_raises_for_an_outage_and_is_dropped_when_refused(monkeypatch):
    with pytest.raises(OperationalError):  # Celery's backend retries, then the outage retry
        final_row(AWAY, monkeypatch)
    assert final_row(REFUSED, monkeypatch) == ["t1"]


def test_a_handler_s_write_retries_an_outage_and_fails_for_good_when_refused():
    assert isinstance(handler_write(AWAY), Retry)
    assert handler_write(REFUSED) is REFUSED  # final: dead-lettered once
