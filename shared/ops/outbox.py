"""``outbox status | retry | drop``: how far each service's outbox relay is behind, the rows
it parked (``shared.service.outbox``), and an operator's decision on each, written to
``<service>.outbox_audit`` (who, when, which event, its type, tries and last error)."""

import getpass
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, text

from shared.core.topology import SERVICES


@dataclass(frozen=True)
class ParkedRow:
    id: str
    type: str
    attempts: int
    parked_at: datetime
    reason: str | None


@dataclass(frozen=True)
class OutboxLag:
    service: str
    #: Rows the relay still tries (parked rows not counted), and the age of the oldest.
    unpublished: int
    oldest_age_seconds: float | None
    parked: list[ParkedRow]


def outbox_lag(engine: Engine, services: Iterable[str] = SERVICES) -> list[OutboxLag]:
    """Rows waiting for the relay, the oldest one's age and the parked rows, for every
    ``<service>.outbox`` that exists."""
    lags = []
    with engine.connect() as conn:
        for name in services:
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": f"{name}.outbox"}).scalar():
                row = conn.execute(
                    text(
                        "SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(created_at)) AS age"
                        f' FROM "{name}".outbox WHERE published_at IS NULL AND parked_at IS NULL'
                    )
                ).one()
                age = float(row.age) if row.age is not None else None
                lags.append(OutboxLag(name, row.n, age, _parked(conn, name)))
    return lags


def _parked(conn: Connection, service: str, event_id: str | None = None) -> list[ParkedRow]:
    rows = conn.execute(
        text(
            "SELECT id::text, type, attempts, parked_at, last_error AS reason"
            f' FROM "{service}".outbox WHERE parked_at IS NOT NULL AND published_at IS NULL'
            " AND (CAST(:id AS text) IS NULL OR id::text = :id) ORDER BY parked_at"
            + (" FOR UPDATE" if event_id else "")
        ),
        {"id": event_id},
    )
    return [ParkedRow(**r._mapping) for r in rows]


def retry(engine: Engine, service: str, event_id: str) -> ParkedRow | None:
    """Give a parked row back to the relay with a fresh budget of tries; None if ``event_id``
    is not parked."""
    return _decide(engine, service, event_id, "retry")


def retry_all(engine: Engine, service: str) -> list[ParkedRow]:
    """Every parked row back to the relay (after a cause that parked them all is fixed, e.g.
    a topic permission the broker refused), each audited."""
    with engine.connect() as conn:
        ids = [row.id for row in _parked(conn, service)]
    return [row for i in ids if (row := retry(engine, service, i)) is not None]


def drop(engine: Engine, service: str, event_id: str) -> ParkedRow | None:
    """Delete a parked row: its event is never published; None if ``event_id`` is not parked."""
    return _decide(engine, service, event_id, "drop")


def _decide(engine: Engine, service: str, event_id: str, action: str) -> ParkedRow | None:
    """Apply ``action`` to the parked row and write the audit line, in one transaction."""
    change = {
        "retry": "UPDATE {t} SET parked_at = NULL, attempts = 0 WHERE id::text = :id",
        "drop": "DELETE FROM {t} WHERE id::text = :id",
    }[action]
    with engine.begin() as conn:
        found = _parked(conn, service, event_id)
        if not found:
            return None
        conn.execute(text(change.format(t=f'"{service}".outbox')), {"id": event_id})
        conn.execute(
            text(
                f'INSERT INTO "{service}".outbox_audit'
                " (operator, action, event_id, event_type, attempts, reason)"
                " VALUES (:operator, :action, CAST(:id AS uuid), :type, :attempts, :reason)"
            ),
            {"operator": getpass.getuser(), "action": action, "id": event_id,
             "type": found[0].type, "attempts": found[0].attempts, "reason": found[0].reason},
        )  # fmt: skip
    return found[0]
