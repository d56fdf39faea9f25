"""A fourth service, added the way a team would: this package and one line in a system
module (``tests.ledger.system``); no file of the platform changes. It keeps a ledger of
signups, read from ``events``."""

from pathlib import Path

from shared import Deployment, ServiceDeclaration, ServiceTopology

SERVICE = ServiceDeclaration(
    ServiceTopology("ledger", subscribes=("user.signed_up",)),
    app="tests.ledger.app",
    deployment=Deployment("prefork", "--concurrency 1", 9199, "a test's throwaway service"),
    migrations=Path(__file__).parent / "migrations",
)
