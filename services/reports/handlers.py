"""Feeding the read model from events, and serving report commands."""

from sqlalchemy.dialects.postgresql import insert

from contracts import GenerateReport, NotificationFailed, NotificationSent, UserSignedUp
from services.reports import workflow
from services.reports.model import facts
from shared import Event


def record_signup(event: UserSignedUp, session) -> None:
    _record(session, event, subject=str(event.payload.email))


def record_notification_sent(event: NotificationSent, session) -> None:
    _record_notification(session, event)


def record_notification_failed(event: NotificationFailed, session) -> None:
    _record_notification(session, event)


def generate_report(command: GenerateReport, task) -> None:
    """Become the report workflow: its last task takes this task's id, so the caller's
    AsyncResult turns SUCCESS with the report id once the report is stored."""
    raise task.replace(workflow.build(task.app, command.kind, command.day))


def _record_notification(session, event: NotificationSent | NotificationFailed) -> None:
    payload = event.payload
    _record(
        session,
        event,
        subject=payload.recipient,
        channel=payload.channel,
        kind=payload.kind,
        detail=payload.error,
    )


def _record(session, event: Event, subject: str | None, **details: str | None) -> None:
    session.execute(
        insert(facts)
        .values(
            event_id=event.id,
            type=event.type,
            occurred_at=event.occurred_at,
            subject=subject,
            **details,
        )
        .on_conflict_do_nothing()
    )
