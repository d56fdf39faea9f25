"""The system with the ledger beside the three services: ``EVENTFUL_SYSTEM=tests.ledger.system``."""

import services
from tests import ledger

SERVICES = (*services.SERVICES, ledger.SERVICE)
