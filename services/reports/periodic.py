"""What beat fires: a heartbeat, and the reports of the period that just ended."""

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from celery import Celery

from services.reports import workflow
from services.reports.periods import previous


def register(celery: Celery) -> None:
    @celery.task(name="reports.heartbeat", shared=False)
    def heartbeat() -> dict[str, Any]:
        """Proof that beat, broker, worker and result store work end to end: each run
        leaves a ``reports.heartbeat`` row in ``reports.celery_taskmeta``."""
        return {"at": datetime.now(UTC).isoformat()}

    @celery.task(name="reports.daily_report", bind=True, shared=False)
    def daily_report(task) -> None:
        """Yesterday's report (run at midnight, Asia/Seoul)."""
        _replace(task, "daily")

    @celery.task(name="reports.weekly_summary", bind=True, shared=False)
    def weekly_summary(task) -> None:
        """Last week's summary, Monday to Sunday (run on Monday morning)."""
        _replace(task, "weekly")


def _replace(task, kind: str) -> None:
    day = previous(kind, task.app.now(), ZoneInfo(task.app.conf.timezone))
    raise task.replace(workflow.build(task.app, kind, day))
