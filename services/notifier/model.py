"""Deliveries: one row per (event, kind) or (command task, kind), the key that makes every
send idempotent, and where a delivery stands (pending, retrying, interrupted, sent, failed)."""

import sqlalchemy as sa

metadata = sa.MetaData(schema="notifier")

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("channel", sa.String(10), nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("task_id", sa.String(200), index=True),
    sa.Column("caused_by", sa.Uuid),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
