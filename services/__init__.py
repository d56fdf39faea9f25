"""The system: the services this deployment runs (the default ``EVENTFUL_SYSTEM``).

A new service is a package beside these with a ``SERVICE`` declaration, listed here. The
system speaks the language in ``contracts``: importing it here registers every event and
command, so each platform tool that loads the system (documents, checks) sees them all.
"""

import contracts  # noqa: F401
from services import notifier, reports, signup

SERVICES = (signup.SERVICE, notifier.SERVICE, reports.SERVICE)
