"""Feeding the read model from events."""

from sqlalchemy.dialects.postgresql import insert

from services.reports.model import facts
from shared.contracts import Event, UserSignedUp


def record_signup(event: UserSignedUp, session) -> None:
    _record(session, event, subject=str(event.payload.email))


def _record(session, event: Event, subject: str | None) -> None:
    session.execute(
        insert(facts)
        .values(event_id=event.id, type=event.type, occurred_at=event.occurred_at, subject=subject)
        .on_conflict_do_nothing()
    )
