"""The long part of a report: reading every fact of the period, in batches, resumable.

A scan is a fold over batches ordered by ``(occurred_at, event_id)``. ``Progress`` is
immutable and advanced only by whole batches, so wherever a soft time limit interrupts
the scan, the progress in hand is consistent: saved, it lets the retry resume exactly
after the last batch that was counted.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.reports.model import facts

FAILURES_SHOWN = 50


@dataclass(frozen=True)
class Progress:
    cursor: tuple[str, str] | None = None
    scanned: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    failures: tuple[dict[str, str | None], ...] = ()

    def add(self, rows: list[Any]) -> "Progress":
        breakdown = dict(self.breakdown)
        failures = list(self.failures)
        for row in rows:
            key = f"{row.type}/{row.channel}" if row.channel else row.type
            breakdown[key] = breakdown.get(key, 0) + 1
            if row.type == "notification.failed" and len(failures) < FAILURES_SHOWN:
                failures.append(
                    {"recipient": row.subject, "channel": row.channel, "kind": row.kind,
                     "error": row.detail}
                )  # fmt: skip
        last = rows[-1]
        return replace(
            self,
            cursor=(last.occurred_at.isoformat(), str(last.event_id)),
            scanned=self.scanned + len(rows),
            breakdown=breakdown,
            failures=tuple(failures),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cursor": list(self.cursor) if self.cursor else None,
            "scanned": self.scanned,
            "breakdown": self.breakdown,
            "failures": list(self.failures),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Progress":
        cursor = tuple(data["cursor"]) if data["cursor"] else None
        return cls(cursor, data["scanned"], data["breakdown"], tuple(data["failures"]))


def next_batch(
    session: sa.Connection, start: datetime, end: datetime, after: tuple[str, str] | None, size: int
) -> list[Any]:
    """The next ``size`` facts of ``[start, end)`` after ``after`` (keyset pagination)."""
    query = sa.select(facts).where(facts.c.occurred_at >= start, facts.c.occurred_at < end)
    if after is not None:
        at, event_id = datetime.fromisoformat(after[0]), after[1]
        query = query.where(sa.tuple_(facts.c.occurred_at, facts.c.event_id) > (at, event_id))
    query = query.order_by(facts.c.occurred_at, facts.c.event_id).limit(size)
    return list(session.execute(query))
