"""The beat schedule and report periods, computed in Asia/Seoul with a fixed clock."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import maybe_schedule

from services.reports.periods import period, previous, shards
from services.reports.schedule import beat_schedule, configure_beat
from shared.core.settings import Settings
from shared.core.topology import service
from shared.worker.app import create_celery_app

#: The reports app as the platform builds it (not imported: importing services.reports.app
#: would bind this process to whatever broker the environment names at collection time).
app = create_celery_app(service("reports"), Settings(), {})
configure_beat(app, 60)

SEOUL = ZoneInfo("Asia/Seoul")


def kst(*args: int) -> datetime:
    return datetime(*args, tzinfo=SEOUL)


def next_run(entry: str, last_run: datetime, now: datetime) -> datetime:
    """When beat fires ``entry`` next, seen at ``now`` (a fixed clock)."""
    schedule = maybe_schedule(beat_schedule(60)[entry]["schedule"], app=app)
    schedule.nowfun = lambda: now
    return now + schedule.remaining_estimate(last_run)


def test_beat_schedules_in_seoul_with_the_single_beat_scheduler():
    assert app.conf.timezone == "Asia/Seoul"
    assert app.conf.beat_scheduler == "shared.worker.beat:SingleBeatScheduler"
    assert set(app.conf.beat_schedule) == {
        "heartbeat", "daily-report", "weekly-summary", "celery.backend_cleanup",
    }  # fmt: skip


def test_the_heartbeat_fires_every_60_seconds_by_default():
    last = kst(2026, 11, 25, 10, 0, 0)
    assert next_run("heartbeat", last, last + timedelta(seconds=10)) == last + timedelta(seconds=60)


def test_the_daily_report_fires_at_midnight_in_seoul_which_is_15h_utc():
    fired = next_run("daily-report", kst(2026, 11, 25, 0, 0), kst(2026, 11, 25, 10, 0))
    assert fired == kst(2026, 11, 26, 0, 0)
    assert fired.astimezone(UTC) == datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_the_weekly_summary_fires_on_monday_at_9_in_seoul():
    wednesday = kst(2026, 11, 25, 12, 0)
    fired = next_run("weekly-summary", kst(2026, 11, 23, 9, 0), wednesday)
    assert fired == kst(2026, 11, 30, 9, 0)
    assert fired.weekday() == 0
    # Late on Sunday in UTC is already Monday morning in Seoul.
    assert fired.astimezone(UTC) == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)


def test_a_run_missed_while_no_beat_held_the_lock_is_due_at_once():
    schedule = maybe_schedule(beat_schedule(60)["daily-report"]["schedule"], app=app)
    schedule.nowfun = lambda: kst(2026, 11, 26, 0, 7)  # beat took over 7 minutes late
    due, _ = schedule.is_due(kst(2026, 11, 25, 0, 0))
    assert due


def test_backend_cleanup_runs_hourly_so_expired_results_do_not_pile_up():
    fired = next_run("celery.backend_cleanup", kst(2026, 11, 25, 9, 30), kst(2026, 11, 25, 9, 45))
    assert fired == kst(2026, 11, 25, 10, 30)


def test_a_daily_report_covers_the_seoul_day_in_24_hourly_shards():
    start, end = period("daily", date(2026, 11, 25), SEOUL)
    assert (start.astimezone(UTC), end.astimezone(UTC)) == (
        datetime(2026, 11, 24, 15, 0, tzinfo=UTC), datetime(2026, 11, 25, 15, 0, tzinfo=UTC),
    )  # fmt: skip
    hours = shards("daily", date(2026, 11, 25), SEOUL)
    assert len(hours) == 24 and hours[0][0] == start and hours[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(hours, hours[1:], strict=False))


def test_a_weekly_summary_covers_seven_days_in_daily_shards():
    days = shards("weekly", date(2026, 11, 23), SEOUL)
    assert [d[0].date() for d in days] == [date(2026, 11, 23) + timedelta(days=i) for i in range(7)]


@pytest.mark.parametrize(
    ("kind", "now", "expected"),
    [
        ("daily", kst(2026, 11, 26, 0, 0, 5), date(2026, 11, 25)),
        ("daily", datetime(2026, 11, 25, 15, 0, 5, tzinfo=UTC), date(2026, 11, 25)),
        ("weekly", kst(2026, 11, 30, 9, 0, 5), date(2026, 11, 23)),
        ("weekly", kst(2026, 12, 6, 23, 0), date(2026, 11, 23)),
    ],
)
def test_scheduled_reports_cover_the_last_complete_seoul_period(kind, now, expected):
    assert previous(kind, now, SEOUL) == expected
