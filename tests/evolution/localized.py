"""A consumer written for ``user.signed_up`` v2: every event it sees has a locale."""

from contracts import UserSignedUpV2
from shared.service.declaration import Service
from tests.evolution import LOCALIZED

service = Service(LOCALIZED.topology)


@service.handles(UserSignedUpV2)
def greet(event: UserSignedUpV2) -> dict:
    return {"version": event.version, "name": event.payload.name, "locale": event.payload.locale}


app = service.celery
