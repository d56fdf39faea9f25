"""Feeding the read model from events, and serving report commands."""

from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert

from contracts import GenerateReport, NotificationFailed, NotificationSent, UserSignedUp
from services.reports import workflow
from services.reports.model import facts
from shared import Database, Event

#: One fact per event, a replay changing nothing. Built once: each event's values go as
#: parameters, so SQLAlchemy neither rebuilds nor re-keys the statement per event.
RECORD = (
    insert(facts)
    .values({c.name: bindparam(c.name) for c in facts.columns})
    .on_conflict_do_nothing()
)


def record_signup(event: UserSignedUp, db: Database) -> None:
    _record(db, event, subject=str(event.payload.email))


def record_notification_sent(event: NotificationSent, db: Database) -> None:
    _record_notification(db, event)


def record_notification_failed(event: NotificationFailed, db: Database) -> None:
    _record_notification(db, event)


def generate_report(command: GenerateReport, task) -> None:
    """Become the report workflow: its last task takes this task's id, so the caller's
    AsyncResult turns SUCCESS with the report id once the report is stored."""
    raise task.replace(workflow.build(task.app, command.kind, command.day))


def _record_notification(db: Database, event: NotificationSent | NotificationFailed) -> None:
    payload = event.payload
    _record(
        db,
        event,
        subject=payload.recipient,
        channel=payload.channel,
        kind=payload.kind,
        detail=payload.error,
    )


def _record(db: Database, event: Event, subject: str | None, **details: str | None) -> None:
    """One statement, committed on its own (autocommit): no BEGIN and COMMIT round trips,
    and no ORM session, for a write that is whole or absent either way."""
    row: dict[str, Any] = {
        "event_id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "subject": subject,
        "channel": None,
        "kind": None,
        "detail": None,
        **details,
    }
    db.autocommit(RECORD, row)
