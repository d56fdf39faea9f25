"""The signup service's tables (schema ``signup``; created by its migrations)."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

metadata = sa.MetaData(schema="signup")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(32)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
