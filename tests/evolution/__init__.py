"""Two throwaway consumers of ``user.signed_up``, one per contract version, beside the
three services (``EVENTFUL_SYSTEM=tests.evolution``): ``legacy`` was written for v1 and
not redeployed, ``localized`` for v2. Each handler returns what it saw, so a test reads
it from the handler's result."""

import services
from shared.core.system import Deployment, ServiceDeclaration
from shared.core.topology import ServiceTopology


def _consumer(name: str) -> ServiceDeclaration:
    return ServiceDeclaration(
        ServiceTopology(name, subscribes=("user.signed_up",)),
        app=f"tests.evolution.{name}",
        deployment=Deployment("prefork", "--concurrency 1", 9198, "a test's throwaway service"),
    )


LEGACY, LOCALIZED = _consumer("legacy"), _consumer("localized")
SERVICES = (*services.SERVICES, LEGACY, LOCALIZED)
