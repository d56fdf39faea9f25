"""Report periods in the service's time zone: what "a day" and "a week" mean."""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

LENGTH = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
SHARD = {"daily": timedelta(hours=1), "weekly": timedelta(days=1)}


def period(kind: str, day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, end)`` of the report of ``kind`` that starts at local midnight of ``day``."""
    start = datetime.combine(day, time(), tz)
    return start, start + LENGTH[kind]


def shards(kind: str, day: date, tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The period cut into the pieces counted in parallel: hours of a day, days of a week."""
    start, end = period(kind, day, tz)
    step = SHARD[kind]
    return [(start + i * step, start + (i + 1) * step) for i in range((end - start) // step)]


def previous(kind: str, now: datetime, tz: ZoneInfo) -> date:
    """The last complete period at ``now``: yesterday, or the week (Monday) before this one."""
    today = now.astimezone(tz).date()
    if kind == "daily":
        return today - timedelta(days=1)
    return today - timedelta(days=today.weekday() + 7)
