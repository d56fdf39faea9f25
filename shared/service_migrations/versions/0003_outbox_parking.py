"""outbox parking: a row that keeps failing stops being retried, with its reason

A row the relay can never publish (its event type no longer published, a routing key the
broker refuses) used to be retried first on every pass, forever. The relay now records the
last failure (``last_error``) and, once a row has failed ``OUTBOX_MAX_ATTEMPTS`` times,
parks it (``parked_at``): the relay skips it until an operator retries or drops it
(``eventful outbox retry|drop SERVICE ID``), each written to ``outbox_audit``.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade(schema: str) -> None:
    op.execute(f"""
        ALTER TABLE "{schema}".outbox
            ADD COLUMN IF NOT EXISTS last_error text,
            ADD COLUMN IF NOT EXISTS parked_at timestamptz""")
    op.execute(f'DROP INDEX IF EXISTS "{schema}".outbox_unpublished')
    op.execute(f"""
        CREATE INDEX IF NOT EXISTS outbox_due ON "{schema}".outbox (created_at)
        WHERE published_at IS NULL AND parked_at IS NULL""")
    op.execute(f"""
        CREATE TABLE IF NOT EXISTS "{schema}".outbox_audit (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            at timestamptz NOT NULL DEFAULT now(),
            operator text NOT NULL,
            action text NOT NULL,
            event_id uuid NOT NULL,
            event_type text NOT NULL,
            attempts integer NOT NULL,
            reason text
        )""")
