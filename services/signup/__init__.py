"""The signup service: owns users, publishes ``user.signed_up``, serves ``signup.user_stats``."""

from pathlib import Path

from shared import Deployment, ServiceDeclaration, ServiceTopology

SERVICE = ServiceDeclaration(
    ServiceTopology("signup", publishes=("user.signed_up",)),
    app="services.signup.app",
    deployment=Deployment(
        "prefork",
        "--autoscale 4,1",
        9101,
        "light database work behind the API; scales down to one process when idle",
    ),
    migrations=Path(__file__).parent / "migrations",
)
