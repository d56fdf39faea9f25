"""The reports read model: one fact per event, keyed by event id (replays change nothing),
and the reports built from it."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from contracts import NotificationPayload, UserSignedUpPayload
from shared import Event, max_length

#: A fact's subject is a signup's e-mail or a notification's recipient.
SUBJECT_MAX = max(
    max_length(UserSignedUpPayload, "email"), max_length(NotificationPayload, "recipient")
)

metadata = sa.MetaData(schema="reports")

facts = sa.Table(
    "facts",
    metadata,
    sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("type", sa.String(max_length(Event, "type")), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("subject", sa.String(SUBJECT_MAX)),
    sa.Column("channel", sa.String(20)),
    sa.Column("kind", sa.String(max_length(NotificationPayload, "kind"))),
    sa.Column("detail", sa.Text),
)

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("summary", JSONB, nullable=False),
    sa.Column("document", JSONB, nullable=False),
    sa.Column("markdown", sa.Text, nullable=False),
    sa.UniqueConstraint("kind", "day"),
)

scan_progress = sa.Table(
    "scan_progress",
    metadata,
    sa.Column("task_id", sa.String(155), primary_key=True),
    sa.Column("state", JSONB, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
)
