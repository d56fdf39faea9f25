"""A consumer written for ``user.signed_up`` v1, still deployed when v2 is published."""

from contracts import UserSignedUp
from shared.service.declaration import Service
from tests.evolution import LEGACY

service = Service(LEGACY.topology)


@service.handles(UserSignedUp)
def greet(event: UserSignedUp) -> dict:
    return {"version": event.version, "name": event.payload.name}


app = service.celery
