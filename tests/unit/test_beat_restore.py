"""How a beat that takes over the lock continues the schedule (no broker, no database)."""

from datetime import UTC, datetime, timedelta

from celery.beat import ScheduleEntry

from shared.core.settings import Settings
from shared.core.topology import service
from shared.worker.app import create_celery_app
from shared.worker.beat import libpq_url, lock_key, restore

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
app = create_celery_app(service("reports"), Settings(), {})


def entries() -> dict[str, ScheduleEntry]:
    made = {
        name: ScheduleEntry(name=name, task=f"reports.{name}", schedule=60, app=app)
        for name in ("heartbeat", "new-entry")
    }
    for entry in made.values():
        entry.schedule.nowfun = lambda: NOW
    return made


def test_a_taking_over_beat_continues_from_the_stored_last_runs():
    schedule = entries()
    last = NOW - timedelta(seconds=45)
    assert restore(schedule, {"heartbeat": (last, 17)}, NOW) == ["new-entry"]

    assert (schedule["heartbeat"].last_run_at, schedule["heartbeat"].total_run_count) == (last, 17)
    # Not at once: the holder fired 45 s ago, so the next heartbeat is 15 s away.
    assert schedule["heartbeat"].is_due() == (False, 15)


def test_an_entry_never_fired_starts_now_and_is_reported_for_storing():
    schedule = entries()
    assert restore(schedule, {}, NOW) == ["heartbeat", "new-entry"]
    assert schedule["new-entry"].last_run_at == NOW


def test_each_service_has_its_own_stable_64_bit_lock():
    assert lock_key("reports") == lock_key("reports")
    assert lock_key("reports") != lock_key("signup")
    assert -(2**63) <= lock_key("reports") < 2**63


def test_the_lock_connects_with_the_sqlalchemy_url_in_libpq_form():
    url = "postgresql+psycopg://postgres:pw@127.0.0.1:5432/eventful"
    assert libpq_url(url) == "postgresql://postgres:pw@127.0.0.1:5432/eventful"
