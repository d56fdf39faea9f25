"""A report scan that hits its soft time limit saves its progress; the retry resumes."""

import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from contracts import GenerateReport
from tests.support import send_command, wait_for

DAY = date(2026, 1, 10)
FACTS = 40


@pytest.fixture
def slow_scans(clean_queues):
    """A worker whose scans read 4 facts per batch, 0.3 s apart, with a 1 s soft limit:
    40 facts take about 3 s, so every attempt is cut short after a few batches."""
    worker = clean_queues.worker(
        "reports",
        REPORT_SOFT_TIME_LIMIT="1",
        REPORT_TIME_LIMIT="10",
        REPORT_SCAN_BATCH="4",
        REPORT_SCAN_PAUSE="0.3",
    ).start()
    yield worker
    worker.stop()


def seed_signups(db, day: date, n: int) -> None:
    """Facts as the read model stores them (the event path is covered elsewhere)."""
    start = datetime.combine(day, datetime.min.time(), ZoneInfo("Asia/Seoul"))
    rows = [
        {"id": uuid.uuid4(), "at": start + timedelta(minutes=30 * i), "s": f"u{i}@example.com"}
        for i in range(n)
    ]
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reports.facts (event_id, type, occurred_at, subject)"
                " VALUES (:id, 'user.signed_up', :at, :s)"
            ),
            rows,
        )


def test_a_scan_cut_by_its_soft_time_limit_saves_progress_and_completes_on_retry(
    stack, slow_scans, db
):
    seed_signups(db, DAY, FACTS)
    command = GenerateReport(kind="daily", day=DAY)
    send_command(stack, GenerateReport.task, **command.model_dump(mode="json"))

    def report():
        with db.connect() as conn:
            return conn.execute(
                text("SELECT summary, document FROM reports.reports WHERE kind='daily' AND day=:d"),
                {"d": DAY},
            ).one_or_none()

    row = wait_for(report, timeout=90)

    log = slow_scans.output()
    assert "soft time limit after" in log and "resuming after" in log
    assert row.document["attempts"] >= 2
    # Every fact counted exactly once across the attempts: had a retry started over,
    # the facts scanned would exceed the facts of the day.
    assert row.document["scanned"] == FACTS
    assert row.summary["signups"] == FACTS
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM reports.scan_progress")).scalar() == 0
