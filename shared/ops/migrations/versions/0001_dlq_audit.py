"""dlq audit: every replay and purge of dead letters, by whom

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade(schema: str) -> None:
    op.create_table(
        "dlq_audit",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("service", sa.String(50), nullable=False),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("messages", sa.Integer, nullable=False),
        sa.Column("task_id", sa.String(255)),
        sa.Column("task", sa.String(255)),
        sa.Column("queue", sa.String(255)),
        sa.Column("reason", sa.String(100)),
        sa.Column("dead_lettered_at", sa.String(64)),
        schema=schema,
    )
    op.create_index("dlq_audit_task", "dlq_audit", ["service", "task_id"], schema=schema)
