"""The signup service: owns users, publishes ``user.signed_up``."""

from shared.service import Service

service = Service("signup")
app = service.celery
