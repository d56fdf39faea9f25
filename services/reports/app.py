"""The reports service: a read model of what happened, schedules and workflows over it."""

from services.reports import handlers
from shared.contracts import UserSignedUp
from shared.service import Service

service = Service("reports")
service.handles(UserSignedUp)(handlers.record_signup)

app = service.celery
