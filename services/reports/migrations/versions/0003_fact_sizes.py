"""fact columns sized by the contracts they store

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

from services.reports.model import SUBJECT_MAX

revision = "0003"
down_revision = "0002"


def upgrade(schema: str) -> None:
    # A notification's recipient (all admins, summarised) outgrew VARCHAR(320).
    op.alter_column(
        "facts", "subject", type_=sa.String(SUBJECT_MAX), existing_type=sa.String(320),
        schema=schema,
    )  # fmt: skip
