"""The ledger's Celery app: one handler, its dependencies named."""

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID, insert

from contracts import UserSignedUp
from shared import Service
from tests.ledger import SERVICE

entries = sa.Table(
    "entries",
    sa.MetaData(schema="ledger"),
    sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.Text, nullable=False),
)

service = Service(SERVICE.topology)


@service.handles(UserSignedUp)
def record_signup(event: UserSignedUp, session) -> None:
    session.execute(
        insert(entries)
        .values(event_id=event.id, email=str(event.payload.email))
        .on_conflict_do_nothing()
    )


app = service.celery
