"""The reports service: a read model of what happened, schedules and workflows over it."""

from pathlib import Path

from shared import Deployment, ServiceDeclaration, ServiceTopology

SERVICE = ServiceDeclaration(
    ServiceTopology(
        "reports",
        subscribes=("user.signed_up", "notification.sent", "notification.failed"),
        publishes=("report.generated",),
    ),
    app="services.reports.app",
    deployment=Deployment(
        "prefork",
        "--autoscale 4,2",
        9103,
        "aggregation and report rendering: CPU-bound, one process per core",
    ),
    migrations=Path(__file__).parent / "migrations",
)
