"""What beat fires: a heartbeat, and the reports of the period that just ended."""

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.reports import workflow
from services.reports.periods import previous
from shared import Service


def heartbeat() -> dict[str, Any]:
    """Proof that beat, broker, worker and result store work end to end: each run
    leaves a ``reports.heartbeat`` row in ``reports.celery_taskmeta``."""
    return {"at": datetime.now(UTC).isoformat()}


def daily_report(task) -> None:
    """Yesterday's report (run at midnight, Asia/Seoul)."""
    _replace(task, "daily")


def weekly_summary(task) -> None:
    """Last week's summary, Monday to Sunday (run on Monday morning)."""
    _replace(task, "weekly")


def register(service: Service) -> None:
    for step in (heartbeat, daily_report, weekly_summary):
        service.task()(step)


def _replace(task, kind: str) -> None:
    day = previous(kind, task.app.now(), ZoneInfo(task.app.conf.timezone))
    raise task.replace(workflow.build(task.app, kind, day))
