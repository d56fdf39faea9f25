"""The system: the services this deployment runs (the default ``EVENTFUL_SYSTEM``).

A new service is a package beside these with a ``SERVICE`` declaration, listed here.
"""

from services import notifier, reports, signup

SERVICES = (signup.SERVICE, notifier.SERVICE, reports.SERVICE)
