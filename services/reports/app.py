"""The reports service: a read model of what happened, schedules and workflows over it.

Worker: ``celery -A services.reports.app worker -Q reports.tasks,reports.events``
Beat:   ``celery -A services.reports.app beat`` (any number: one fires, see shared/worker/beat.py)
"""

from contracts import GenerateReport, NotificationFailed, NotificationSent, UserSignedUp
from services.reports import examples, handlers, periodic, workflow  # noqa: F401 (examples' tasks)
from services.reports.schedule import configure_beat
from services.reports.service import service, settings

service.handles(UserSignedUp)(handlers.record_signup)
service.handles(NotificationSent)(handlers.record_notification_sent)
service.handles(NotificationFailed)(handlers.record_notification_failed)
service.command(GenerateReport)(handlers.generate_report)
workflow.register(service, settings)
periodic.register(service)

app = service.celery
configure_beat(app, settings.heartbeat_interval)
