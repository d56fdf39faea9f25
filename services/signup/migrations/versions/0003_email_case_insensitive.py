"""users: one user per e-mail address whatever its case (a unique index on lower(email))

Revision ID: 0003

Existing users whose addresses differ only in case are not merged here: which one is the
person (verified phone, events already announced and counted by reports) is the operator's
call. The migration refuses, naming their ids, and changes nothing; once the operator has
resolved them it builds the index. The table is locked first, so no signup slips a new
duplicate in between the check and the index.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
SHOWN = 20

DUPLICATES = """
    SELECT array_agg(id::text ORDER BY created_at) FROM {schema}.users
    GROUP BY lower(email) HAVING count(*) > 1 ORDER BY min(created_at)
"""


def upgrade(schema: str) -> None:
    op.execute(f"LOCK TABLE {schema}.users IN SHARE ROW EXCLUSIVE MODE")
    groups = [row[0] for row in op.get_bind().execute(sa.text(DUPLICATES.format(schema=schema)))]
    if groups:
        raise RuntimeError(refusal(schema, groups))
    op.create_index(
        "users_email_lower_key", "users", [sa.text("lower(email)")], unique=True, schema=schema
    )
    op.drop_constraint("users_email_key", "users", schema=schema)


def refusal(schema: str, groups: list[list[str]]) -> str:
    """The duplicates by user id (the addresses stay out of logs), oldest first."""
    shown = "\n".join("  " + ", ".join(ids) for ids in groups[:SHOWN])
    more = f"\n  ... and {len(groups) - SHOWN} more" if len(groups) > SHOWN else ""
    many = "address is" if len(groups) == 1 else "addresses are"
    return (
        f"{len(groups)} e-mail {many} shared by several users (differing only in case);"
        f" keep one user of each group below (oldest first) and run the migration again:\n"
        f"{shown}{more}\n"
        f"  list them: SELECT lower(email), id, created_at FROM {schema}.users WHERE lower(email)"
        f" IN (SELECT lower(email) FROM {schema}.users GROUP BY 1 HAVING count(*) > 1)"
    )
