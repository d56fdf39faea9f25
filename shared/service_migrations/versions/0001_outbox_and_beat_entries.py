"""outbox and beat_entries: the platform's tables in every service's schema

``shared.service.outbox`` and ``shared.worker.beat`` own these tables, so the platform
creates them, in each service's schema, whatever the service is. Databases created before
this revision already have them (from the services' own migrations): ``IF NOT EXISTS``
leaves those as they are.

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade(schema: str) -> None:
    op.execute(f"""
        CREATE TABLE IF NOT EXISTS "{schema}".outbox (
            id uuid PRIMARY KEY,
            type text NOT NULL,
            body jsonb NOT NULL,
            created_at timestamptz NOT NULL,
            published_at timestamptz,
            attempts integer NOT NULL DEFAULT 0
        )""")
    op.execute(f"""
        CREATE INDEX IF NOT EXISTS outbox_unpublished ON "{schema}".outbox (created_at)
        WHERE published_at IS NULL""")
    op.execute(f"""
        CREATE TABLE IF NOT EXISTS "{schema}".beat_entries (
            name varchar(200) PRIMARY KEY,
            last_run_at timestamptz NOT NULL,
            total_run_count integer NOT NULL
        )""")
