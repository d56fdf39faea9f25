"""The platform library every service imports; the only package that knows Celery and kombu.

A service author needs only the names below (``from shared import Service, Event, ...``);
everything else is the platform's own, in folders that show its layers, each importing only
the ones under it (checked by ``lint-imports``, contracts in pyproject.toml)::

    shared.ops        the ``eventful`` CLI, one module per command group; metrics
    shared.service    what an author declares: Service, the outbox, the test kit
    shared.worker     the receive path, dead-lettering, inline handlers, results, beat
    shared.contracts  event and command bases, evolution, compatibility, documents
    shared.core       settings, the system's services, topology, database, tracing, logs

Services import ``shared`` itself, never those folders, and ``shared`` imports no service.
"""

from shared.contracts.models import EMAIL_MAX, Command, Event, max_length, upcaster
from shared.core.db import Database
from shared.core.logs import use_json_logs_outside_workers
from shared.core.migrations import run as run_migrations
from shared.core.retry import RetryPolicy
from shared.core.settings import Settings
from shared.core.system import Deployment, ServiceDeclaration
from shared.core.topology import ServiceTopology
from shared.core.tracing import instrument_app
from shared.service.declaration import Service
from shared.service.handler import DATABASE_RETRY_DELAY, InvalidMessage
from shared.service.outbox import Outbox, Relay, RelayError
from shared.service.relaying import AfterCommit
from shared.service.testing import Harness

__all__ = [
    # declaring a service and its place in the system
    "Service",
    "ServiceDeclaration",
    "ServiceTopology",
    "Deployment",
    "Settings",
    # the language it speaks
    "Event",
    "Command",
    "upcaster",
    "max_length",
    "EMAIL_MAX",
    # handling, storing, publishing
    "RetryPolicy",
    "DATABASE_RETRY_DELAY",
    "Database",
    "Outbox",
    "Relay",
    "RelayError",
    "AfterCommit",
    "run_migrations",
    # running beside a worker (an HTTP API), and testing
    "instrument_app",
    "use_json_logs_outside_workers",
    "Harness",
    "InvalidMessage",
]
