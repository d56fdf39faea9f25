"""outbox.headers: what an event is published with besides its body

The relay publishes a row long after the request that recorded it (and from another
thread or process), so the row keeps the message headers of the moment it was recorded:
the W3C trace context (``traceparent``, ``tracestate``) and the ``x-correlation-id`` /
``x-causation-id`` of ``shared.core.tracing``. Rows recorded before this revision have none
and are published as before.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade(schema: str) -> None:
    op.execute(f'ALTER TABLE "{schema}".outbox ADD COLUMN IF NOT EXISTS headers jsonb')
