"""notification facts, reports, scan progress, beat state

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"


def upgrade(schema: str) -> None:
    op.add_column("facts", sa.Column("channel", sa.String(20)), schema=schema)
    op.add_column("facts", sa.Column("kind", sa.String(100)), schema=schema)
    op.add_column("facts", sa.Column("detail", sa.Text), schema=schema)
    op.create_index("facts_time_id", "facts", ["occurred_at", "event_id"], schema=schema)
    op.create_table(
        "reports",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", JSONB, nullable=False),
        sa.Column("document", JSONB, nullable=False),
        sa.Column("markdown", sa.Text, nullable=False),
        sa.UniqueConstraint("kind", "day"),
        schema=schema,
    )
    op.create_table(
        "scan_progress",
        sa.Column("task_id", sa.String(155), primary_key=True),
        sa.Column("state", JSONB, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )
