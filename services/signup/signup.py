"""Signing a user up: save the user, then announce it to the other services."""

from datetime import UTC, datetime
from uuid import UUID, uuid4

from services.signup.model import users
from shared.contracts import UserSignedUp
from shared.service import Service


def sign_up(service: Service, *, email: str, name: str, phone: str | None = None) -> UUID:
    """Create the user row and publish ``user.signed_up``; returns the new user's id."""
    user_id = uuid4()
    event = UserSignedUp(
        source="signup",
        payload={"user_id": user_id, "email": email, "name": name, "phone": phone},
    )
    with service.db.transaction() as session:
        session.execute(
            users.insert().values(
                id=user_id, email=email, name=name, phone=phone, created_at=datetime.now(UTC)
            )
        )
    service.publish(event)
    return user_id
