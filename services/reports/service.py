"""The reports ``Service``, apart from ``app.py`` so that a task module can decorate its
functions with it at import (``@service.task``), as Celery's ``proj/celery.py`` holds the
app that ``proj/tasks.py`` imports; ``app.py`` imports those modules and wires the rest."""

from services.reports.config import get_settings
from shared import Service

settings = get_settings()
service = Service("reports", settings=settings, dependencies={"settings": lambda: settings})
