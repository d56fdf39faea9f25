"""The signup service's tables (schema ``signup``; created by its migrations)."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from contracts import UserSignedUpPayload
from shared import max_length

metadata = sa.MetaData(schema="signup")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.String(max_length(UserSignedUpPayload, "email")), nullable=False),
    sa.Column("name", sa.String(max_length(UserSignedUpPayload, "name")), nullable=False),
    sa.Column("phone", sa.String(max_length(UserSignedUpPayload, "phone"))),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
# One user per address whatever its case (migration 0003): what ON CONFLICT names.
sa.Index("users_email_lower_key", sa.func.lower(users.c.email), unique=True)
