"""deliveries: the task that owns each delivery, its cause, room for several recipients

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade(schema: str) -> None:
    op.add_column("deliveries", sa.Column("task_id", sa.String(200)), schema=schema)
    op.add_column("deliveries", sa.Column("caused_by", sa.Uuid), schema=schema)
    op.add_column("deliveries", sa.Column("updated_at", sa.DateTime(timezone=True)), schema=schema)
    op.alter_column("deliveries", "recipient", type_=sa.Text, schema=schema)
    op.create_index("deliveries_task_id", "deliveries", ["task_id"], schema=schema)
