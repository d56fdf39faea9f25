"""``outbox status``: how far each service's outbox relay is behind."""

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, text

from shared.topology import SERVICES


@dataclass(frozen=True)
class OutboxLag:
    service: str
    unpublished: int
    oldest_age_seconds: float | None


def outbox_lag(engine: Engine, services: Iterable[str] = SERVICES) -> list[OutboxLag]:
    """Unpublished rows and the age of the oldest, for every ``<service>.outbox`` that exists."""
    lags = []
    with engine.connect() as conn:
        for name in services:
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": f"{name}.outbox"}).scalar():
                row = conn.execute(
                    text(
                        "SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(created_at)) AS age"
                        f' FROM "{name}".outbox WHERE published_at IS NULL'
                    )
                ).one()
                age = float(row.age) if row.age is not None else None
                lags.append(OutboxLag(name, row.n, age))
    return lags
