"""The reports read model: one fact per event, keyed by event id (replays change nothing)."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

metadata = sa.MetaData(schema="reports")

facts = sa.Table(
    "facts",
    metadata,
    sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("subject", sa.String(320)),
)
