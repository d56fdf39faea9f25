"""What the notifier does with events and commands; plain functions, dependencies named."""

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from services.notifier.model import deliveries
from shared.contracts import UserSignedUp


def send_welcome_email(event: UserSignedUp, session, mailer) -> str:
    """Send the welcome e-mail once per event, however often the event arrives."""
    key = f"{event.id}/welcome_email"
    session.execute(
        insert(deliveries)
        .values(
            id=key,
            kind="welcome_email",
            channel="email",
            recipient=event.payload.email,
            status="pending",
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing()
    )
    row = session.execute(
        select(deliveries.c.status).where(deliveries.c.id == key).with_for_update()
    ).one()
    if row.status == "sent":
        return "already-sent"
    mailer.send(event.payload.email, "Welcome!", f"Hello {event.payload.name}, welcome aboard.")
    session.execute(
        deliveries.update()
        .where(deliveries.c.id == key)
        .values(status="sent", sent_at=datetime.now(UTC), attempts=deliveries.c.attempts + 1)
    )
    return "sent"
