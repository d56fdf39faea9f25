"""outbox: events recorded in the same transaction as the users they announce

Revision ID: 0002
"""

revision = "0002"
down_revision = "0001"


def upgrade(schema: str) -> None:
    """The outbox is the platform's table now (shared/service_migrations creates it in every
    service's schema); this revision stays so databases that ran it keep their history."""
