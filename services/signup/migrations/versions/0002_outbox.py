"""outbox: events recorded in the same transaction as the users they announce

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"


def upgrade(schema: str) -> None:
    op.create_table(
        "outbox",
        sa.Column("id", UUID(as_uuid=True), primary_key=True, comment="the event id"),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("body", JSONB, nullable=False, comment="the event's JSON"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        schema=schema,
    )
    op.create_index(
        "outbox_unpublished",
        "outbox",
        ["created_at"],
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )
