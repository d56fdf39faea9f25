"""entries: one row per signup the ledger has seen

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0001"
down_revision = None


def upgrade(schema: str) -> None:
    op.create_table(
        "entries",
        sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        schema=schema,
    )
