"""Deliveries: one row per (event, kind), the key that makes every send idempotent."""

import sqlalchemy as sa

metadata = sa.MetaData(schema="notifier")

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("channel", sa.String(10), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
)
