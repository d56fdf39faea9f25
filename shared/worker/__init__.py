"""The receiving side: the Celery app factory, the checks every message passes, intake of
foreign forms, dead-lettering, inline handlers, results, single beat. Stands on
``shared.contracts`` and ``shared.core``."""
