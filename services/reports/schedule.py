"""The beat schedule as data, in the app's time zone (Asia/Seoul)."""

from typing import Any

from celery import Celery
from celery.schedules import crontab

#: Only one beat fires, however many are started (see shared/worker/beat.py).
SCHEDULER = "shared.worker.beat:SingleBeatScheduler"


def configure_beat(app: Celery, heartbeat_seconds: float) -> None:
    """So that ``celery -A services.reports.app beat`` alone runs the right schedule."""
    app.conf.update(beat_schedule=beat_schedule(heartbeat_seconds), beat_scheduler=SCHEDULER)


def beat_schedule(heartbeat_seconds: float) -> dict[str, dict[str, Any]]:
    """What beat fires. ``celery.backend_cleanup`` is what makes ``result_expires`` delete
    old results on the database backend: hourly, so results live at most an hour past it."""
    return {
        "heartbeat": {"task": "reports.heartbeat", "schedule": heartbeat_seconds},
        "daily-report": {"task": "reports.daily_report", "schedule": crontab(minute=0, hour=0)},
        "weekly-summary": {
            "task": "reports.weekly_summary",
            "schedule": crontab(minute=0, hour=9, day_of_week="mon"),
        },
        "celery.backend_cleanup": {
            "task": "celery.backend_cleanup",
            "schedule": crontab(minute=30),
            "options": {"expires": 1800},
        },
    }
