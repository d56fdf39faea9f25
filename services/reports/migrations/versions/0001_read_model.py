"""read model

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0001"
down_revision = None


def upgrade(schema: str) -> None:
    op.create_table(
        "facts",
        sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(320)),
        schema=schema,
    )
    op.create_index("facts_type_time", "facts", ["type", "occurred_at"], schema=schema)
