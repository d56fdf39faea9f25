"""dlq audit: a replay is claimed once per dead letter, then marked replayed

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade(schema: str) -> None:
    op.add_column("dlq_audit", sa.Column("letter_id", sa.String(64)), schema=schema)
    op.add_column("dlq_audit", sa.Column("state", sa.String(20)), schema=schema)
    op.add_column("dlq_audit", sa.Column("replayed_at", sa.DateTime(timezone=True)), schema=schema)
    op.execute(
        f"UPDATE \"{schema}\".dlq_audit SET state = 'replayed', replayed_at = at"
        " WHERE action = 'replay'"
    )
    op.create_unique_constraint(
        "dlq_audit_one_replay_per_letter", "dlq_audit", ["service", "letter_id"], schema=schema
    )
