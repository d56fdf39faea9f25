"""Signing a user up: the user, the verification text and ``user.signed_up``, all or nothing."""

import logging
import secrets
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert

from contracts import UserSignedUp
from services.signup.model import users
from services.signup.sms import SmsClient
from shared import Outbox, Relay, RelayError, Service

logger = logging.getLogger(__name__)


#: The user's row, or none when the address is taken whatever its case; built once, run
#: with each signup's values (SQLAlchemy compiles it once).
INSERT_USER = (
    insert(users)
    .values({column.name: sa.bindparam(column.name) for column in users.c})
    .on_conflict_do_nothing(index_elements=[sa.func.lower(users.c.email)])
    .returning(*users.c)
)


class DuplicateEmail(ValueError):
    """Another user already has this e-mail address."""


class Created(NamedTuple):
    """What a signup wrote: the user's row as stored, and its ``user.signed_up``."""

    user: dict[str, Any]
    event: UserSignedUp


def create_user(
    session: Connection,
    outbox: Outbox,
    *,
    email: str,
    name: str,
    phone: str | None = None,
    sms: SmsClient | None = None,
) -> Created:
    """Save the user, text the verification code, record ``user.signed_up`` in the outbox.

    Everything happens in the caller's transaction: if the e-mail is taken or the SMS
    cannot be sent, the caller's rollback leaves neither user nor event behind. The user
    row is written first, so a concurrent signup with the same e-mail (in any case) waits
    on it and is refused rather than texted twice. The row comes back from the INSERT
    itself, so the caller answers without reading it again.
    """
    values = {"id": uuid4(), "email": email, "name": name, "phone": phone}
    row = session.execute(INSERT_USER, {**values, "created_at": datetime.now(UTC)}).first()
    user = _created(row, email)
    if sms is not None and phone is not None:
        sms.send(phone, _verification_text())
    event = _signed_up(user)
    outbox.add(session, event)
    return Created(user, event)


def _created(row: sa.Row | None, email: str) -> dict[str, Any]:
    if row is None:
        raise DuplicateEmail(f"a user with e-mail {email} already exists")
    return dict(row._mapping)


def _verification_text() -> str:
    return f"Your verification code is {secrets.randbelow(10**6):06d}"


def _signed_up(user: dict[str, Any]) -> UserSignedUp:
    payload = {"user_id": user["id"], **{k: user[k] for k in ("email", "name", "phone")}}
    return UserSignedUp(source="signup", payload=payload)


def sign_up(service: Service, *, email: str, name: str, phone: str | None = None) -> UUID:
    """Create the user and publish ``user.signed_up`` at once; returns the new user's id.

    For scripts and the demo, which run no outbox relay: the event is committed with the
    user, then published here. If the broker is away it stays in the outbox for the relay.
    """
    outbox = Outbox(service)
    with service.db.transaction() as session:
        event = create_user(session, outbox, email=email, name=name, phone=phone).event
    relay = Relay(outbox)
    try:
        relay.publish_pending([event.id])
    except RelayError as exc:
        logger.warning(
            "user %s saved; user.signed_up left to the outbox relay: %s", event.payload.user_id, exc
        )
    finally:
        relay.close()
    return event.payload.user_id
