"""The notifier service: e-mail and SMS on behalf of the others."""

from pathlib import Path

from shared import Deployment, ServiceDeclaration, ServiceTopology

SERVICE = ServiceDeclaration(
    ServiceTopology(
        "notifier",
        subscribes=("user.signed_up", "report.generated"),
        publishes=("notification.sent", "notification.failed"),
    ),
    app="services.notifier.app",
    deployment=Deployment(
        "prefork",
        "--autoscale 8,2",
        9102,
        "waits on SMTP servers and the SMS gateway; only prefork enforces the send time"
        " limits (the threads pool ignores them), so a hung send is cut and retried",
    ),
    migrations=Path(__file__).parent / "migrations",
)
