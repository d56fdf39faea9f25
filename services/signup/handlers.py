"""The commands the signup service serves to other services (through RabbitMQ only)."""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from psycopg.errors import QueryCanceled
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from contracts import UserStats
from services.signup.config import SignupSettings
from services.signup.model import users


class StatsTimedOut(RuntimeError):
    """The statistics query ran past its budget (the database is busy or locked)."""


def user_stats(command: UserStats, session: Connection, settings: SignupSettings) -> dict:
    """Signups per UTC day over the last ``command.days`` days, and the total ever.

    The query gets a statement timeout: a report must never hold the users table hostage.
    """
    timeout_ms = max(1, int(settings.user_stats_timeout * 1000))
    session.execute(sa.text(f"SET LOCAL statement_timeout = {timeout_ms}"))
    today = datetime.now(UTC).date()
    first = today - timedelta(days=command.days - 1)
    day = sa.func.date(sa.func.timezone("UTC", users.c.created_at)).label("day")
    try:
        total = session.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()
        counted = session.execute(
            sa.select(day, sa.func.count())
            .where(users.c.created_at >= datetime(first.year, first.month, first.day, tzinfo=UTC))
            .group_by(day)
        ).all()
    except OperationalError as exc:
        if isinstance(exc.orig, QueryCanceled):
            raise StatsTimedOut(
                f"signup.user_stats cancelled after {settings.user_stats_timeout:g}s: {exc.orig}"
            ) from exc
        raise
    per_day = {(first + timedelta(days=i)).isoformat(): 0 for i in range(command.days)}
    per_day.update({d.isoformat(): n for d, n in counted})
    return {"total": total, "days": command.days, "per_day": per_day}
